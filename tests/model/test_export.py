import json
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.model.baseline import Baseline, BaselineConfig
from hierpt.model.export import WEIGHTS, load_any_export, load_export, save_export
from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import document_words, splitter_version, words_to_tensors


def test_export_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = HAT(HATConfig.from_name("tiny")).eval()
    save_export(model.state_dict(), model.config, str(tmp_path / "export"), metadata={"step": 3})
    loaded = load_export(str(tmp_path / "export"))
    batch = words_to_tensors([document_words("Hallo Welt, wie geht's?", 32)], 32)
    with torch.no_grad():
        assert torch.equal(model(*batch).nll_sum, loaded(*batch).nll_sum)
    assert loaded.config == model.config


def test_incomplete_export_is_refused(tmp_path):
    (tmp_path / WEIGHTS).write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="not a complete hierpt export"):
        load_export(str(tmp_path))


def test_generate_cli_reads_an_export(tmp_path):
    model = HAT(HATConfig.from_name("tiny"))
    save_export(model.state_dict(), model.config, str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "hierpt.cli", "generate", "--checkpoint", str(tmp_path), "--prompt", "Hi", "--max-words", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("Hi")


def test_generate_cli_reports_a_missing_export_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hierpt.cli", "generate", "--checkpoint", str(tmp_path / "nope"), "--prompt", "Hi"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no such export, checkpoint or run directory" in result.stderr


def test_a_baseline_export_is_refused_by_the_hat_loader_in_one_line(tmp_path):
    from hierpt.model.export import load_export

    model = HAT(HATConfig.from_name("tiny"))
    save_export(model.state_dict(), model.config, str(tmp_path))
    document = json.loads((tmp_path / "config.json").read_text())
    document["hierpt"]["model_kind"] = "baseline"
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="baseline export, not a HAT"):
        load_export(str(tmp_path))


def test_save_pretrained_and_from_pretrained_round_trip_and_name_the_splitter(tmp_path):
    torch.manual_seed(2)
    model = HAT(HATConfig.from_name("tiny")).eval()
    model.save_pretrained(tmp_path / "hub")
    document = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert document["model_type"] == "hierpt_hat"
    assert document["hierpt"]["splitter"] == {"name": "hat-splitter", "version": splitter_version()}
    loaded = HAT.from_pretrained(tmp_path / "hub")
    assert not loaded.training and loaded.config == model.config
    batch = words_to_tensors([document_words("Hallo Welt, wie geht's?", 32)], 32)
    with torch.no_grad():
        assert torch.equal(model(*batch).nll_sum, loaded(*batch).nll_sum)
        assert torch.equal(model(*batch).nll_sum, load_export(str(tmp_path / "hub"))(*batch).nll_sum)


def write_pre_hub_export(path, model, kind: str, tokenizer=None) -> None:
    """An export as hierpt wrote it before `model_type`: hierpt's tensor names, no Hugging Face files."""
    path.mkdir()
    (path / WEIGHTS).write_bytes(safetensors.torch.save(model.state_dict(), metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
    metadata = {"model_kind": kind} if kind != "hat" else {}  # the first HAT exports named no family
    (path / "config.json").write_text(json.dumps({"model": model.config.to_dict(), "hierpt": metadata}))


def test_exports_written_before_model_type_still_load(tmp_path):
    torch.manual_seed(3)
    hat = HAT(HATConfig.from_name("tiny")).eval()
    write_pre_hub_export(tmp_path / "hat", hat, "hat")
    tokenizer = BPETokenizer.train(["old exports keep loading, old exports keep loading"] * 4, vocab_size=270)
    baseline = Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size)).eval()
    write_pre_hub_export(tmp_path / "baseline", baseline, "baseline", tokenizer)
    for original, url in ((hat, tmp_path / "hat"), (baseline, tmp_path / "baseline")):
        loaded, _ = load_any_export(str(url))
        assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), loaded.state_dict().values()))
    assert HAT.from_pretrained(tmp_path / "hat").config == hat.config


def test_bf16_export_halves_the_weights_and_loads_as_fp32(tmp_path):
    model = HAT(HATConfig.from_name("tiny"))
    save_export(model.state_dict(), model.config, str(tmp_path / "bf16"), dtype="bf16")
    stored = safetensors.torch.load((tmp_path / "bf16" / WEIGHTS).read_bytes())
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    loaded = load_export(str(tmp_path / "bf16"))
    expected = model.state_dict()["lm_head.weight"].to(torch.bfloat16).float()
    assert loaded.lm_head.weight.dtype == torch.float32 and torch.equal(loaded.lm_head.weight, expected)
    with pytest.raises(ValueError, match="export dtype 'fp16': choose one of fp32, bf16"):
        save_export(model.state_dict(), model.config, str(tmp_path / "fp16"), dtype="fp16")
