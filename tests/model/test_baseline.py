import pytest
import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.model.baseline import (
    Baseline,
    BaselineConfig,
    build_meta,
    flops_per_token,
)
from hierpt.cli import main
from hierpt.model.baseline import EOD_TOKEN
from hierpt.model.export import export_family, load_any_export, read_export_document, save_export
from hierpt.model.generate import SamplingConfig, generate_baseline_text
from hierpt.model.hat import HAT, IGNORE, HATConfig

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3, "Grüße aus München! 快速的狐狸。 Быстрая лиса."]


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXTS * 4, vocab_size=300)


def tiny(tokenizer: BPETokenizer) -> Baseline:
    torch.manual_seed(0)
    return Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size))


def batch(tokenizer: BPETokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """Each text as [end of document] + tokens + [end of document], right-padded with IGNORE."""
    return tokenizer.batch([[tokenizer.eod_id, *ids, tokenizer.eod_id] for ids in tokenizer.encode_batch(texts)])


def test_batch_pads_with_ignore_and_counts_the_bytes_of_real_tokens_only(tokenizer):
    inputs = batch(tokenizer, TEXTS)
    lengths = [len(tokenizer.encode(t)) + 2 for t in TEXTS]
    assert inputs["tokens"].shape == (2, max(lengths))
    assert (inputs["tokens"][1, lengths[1] :] == IGNORE).all() and (inputs["token_bytes"][1, lengths[1] :] == 0).all()
    assert [int(inputs["token_bytes"][i].sum()) for i in range(2)] == [len(t.encode()) for t in TEXTS]


def test_forward_counts_every_byte_of_the_documents_and_predicts_end_of_document(tokenizer):
    out = tiny(tokenizer)(**batch(tokenizer, TEXTS))
    assert out.utf8_bytes == sum(len(t.encode()) for t in TEXTS)
    assert out.targets == sum(len(ids) + 1 for ids in tokenizer.encode_batch(TEXTS))
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(
        out.nll_sum.item() / out.targets.item(), rel=1e-5
    )


def test_padding_changes_no_sum(tokenizer):
    model = tiny(tokenizer).eval()
    together = model(**batch(tokenizer, TEXTS))
    apart = [model(**batch(tokenizer, [t])) for t in TEXTS]
    assert together.utf8_bytes == sum(o.utf8_bytes for o in apart)
    assert together.tokens_correct == sum(o.tokens_correct for o in apart)
    assert together.nll_sum.item() == pytest.approx(sum(o.nll_sum.item() for o in apart), rel=1e-4)


def test_training_lowers_the_loss(tokenizer):
    model = tiny(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    inputs = batch(tokenizer, TEXTS)
    first = model(**inputs).loss.item()
    for _ in range(15):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_flops_formula_counts_the_model_weights():
    """6 FLOPs per weight per token (fwd + bwd) for every matmul weight, plus attention over seq_tokens/2."""
    config = BaselineConfig.from_name("small")
    model = build_meta(config)
    matmul_weights = sum(
        p.numel() for name, p in model.named_parameters() if p.dim() == 2 and not name.startswith("embed")
    )
    stack = config.backbone
    attention = 3 * stack.layers * 2 * 2 * stack.dim * config.seq_tokens / 2
    assert flops_per_token(config) == pytest.approx(6 * matmul_weights + attention)


def test_paper_presets_have_table_2_sizes():
    for name, billions in (("1b", 1.07), ("3b", 3.11), ("7b", 6.98)):
        assert build_meta(BaselineConfig.from_name(name)).num_params()["total"] / 1e9 == pytest.approx(
            billions, rel=0.02
        )


def test_config_round_trips_and_errors_name_the_field():
    config = BaselineConfig.from_name("tiny", vocab_size=777)
    assert BaselineConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="seq_tokens"):
        BaselineConfig.from_name("tiny", seq_tokens=1)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        BaselineConfig.from_name("huge")


def test_export_round_trip_keeps_outputs_and_tokenizer(tokenizer, tmp_path):
    model = tiny(tokenizer).eval()
    url = save_export(model.state_dict(), model.config, str(tmp_path / "export"), {"step": 3}, tokenizer)
    loaded, loaded_tokenizer = load_any_export(url)
    assert loaded_tokenizer.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])
    inputs = batch(tokenizer, TEXTS)
    assert torch.equal(loaded(**inputs).nll_sum, model(**inputs).nll_sum)
    hat_url = save_export(
        HAT(HATConfig.from_name("tiny")).state_dict(), HATConfig.from_name("tiny"), str(tmp_path / "hat")
    )
    assert [export_family(read_export_document(u)).name for u in (url, hat_url)] == ["baseline", "hat"]
    assert load_any_export(hat_url)[1] is None
    with pytest.raises(ValueError, match="a baseline export needs tokenizer"):
        save_export(model.state_dict(), model.config, str(tmp_path / "untokenized"))


def test_export_refuses_a_tokenizer_bigger_than_the_vocabulary(tokenizer, tmp_path):
    small = Baseline(BaselineConfig.from_name("tiny", vocab_size=100))
    with pytest.raises(ValueError, match="tokenizer has 300 ids but the model embeds 100"):
        save_export(small.state_dict(), small.config, str(tmp_path / "export"), tokenizer=tokenizer)
    assert not (tmp_path / "export").exists()


def test_generation_continues_a_memorised_text_and_stops_at_the_word_budget(tokenizer, tmp_path, capsys):
    model = tiny(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    inputs = batch(tokenizer, TEXTS[:1])
    for _ in range(80):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    greedy = SamplingConfig(max_words=4)
    assert generate_baseline_text(model, tokenizer, "The quick", greedy) == " brown fox jumps over"
    sampled = SamplingConfig(max_words=6, temperature=1.5, seed=3)
    assert generate_baseline_text(model, tokenizer, "Быстрая", sampled) == generate_baseline_text(
        model, tokenizer, "Быстрая", sampled
    )
    url = save_export(model.state_dict(), model.config, str(tmp_path / "export"), tokenizer=tokenizer)
    main(["generate", "--checkpoint", url, "--prompt", "The quick", "--max-words", "2"])
    assert capsys.readouterr().out == "The quick brown fox\n"


def test_export_is_a_llama_checkpoint_that_transformers_scores_identically(tokenizer, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size + 5, rope_theta=500.0))
    model = model.eval()
    url = save_export(model.state_dict(), model.config, str(tmp_path / "export"), tokenizer=tokenizer)
    llama = LlamaForCausalLM.from_pretrained(url).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(url)
    rows = [hf_tokenizer(EOD_TOKEN + text)["input_ids"] for text in TEXTS]
    assert rows == [[tokenizer.eod_id, *tokenizer.encode(text)] for text in TEXTS]
    assert hf_tokenizer.eos_token_id == llama.config.eos_token_id == tokenizer.eod_id
    tokens = torch.tensor([row[:24] for row in rows])
    with torch.no_grad():
        torch.testing.assert_close(llama(tokens).logits, model.logits(tokens), rtol=0, atol=1e-5)
    loaded, _ = load_any_export(url)  # hierpt's own loader reads the same directory
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
