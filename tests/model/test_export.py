import json
import subprocess
import sys

import pytest
import torch

from hierpt.model.export import WEIGHTS, load_export, save_export
from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import document_words, words_to_tensors


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
