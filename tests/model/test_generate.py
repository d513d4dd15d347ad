import pytest
import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.model.baseline import Baseline, BaselineConfig
from hierpt.model.generate import (
    SamplingConfig,
    generate_baseline,
    generate_baseline_uncached,
    generate_hat,
    generate_hat_texts,
    generate_text,
    generate_words_uncached,
    prompt_words,
)
from hierpt.eval.harness import cut_at_stops
from hierpt.splitting import END_OF_DOC_WORD

from tests.fixtures.models import TEXT, tiny_model

PROMPTS = ["The ", "The qu", "你好", "", "Der schnelle braune Fuchs springt über die Brücke, und dann"]


def test_cached_greedy_generation_equals_the_uncached_generator_for_a_batch_of_different_lengths():
    model = tiny_model(init_std=0.2).eval()  # peaked logits: a random model whose argmax is no near-tie
    greedy = SamplingConfig(max_words=10)
    cached = generate_hat(model, PROMPTS, greedy)
    assert cached == [generate_words_uncached(model, prompt, greedy) for prompt in PROMPTS]
    assert all(len(words) == 10 or words[-1] == END_OF_DOC_WORD for words in cached)


def test_a_row_samples_the_same_text_alone_or_in_a_batch():
    model = tiny_model(init_std=0.2).eval()
    hot = SamplingConfig(max_words=6, temperature=1.2, top_p=0.9, seed=5)
    assert generate_hat_texts(model, PROMPTS, hot)[1] == generate_text(model, PROMPTS[1], hot)


def test_a_stop_string_ends_its_row_as_soon_as_it_appears(overfit_model):
    model, _, _ = overfit_model
    prompts = ["The qu", TEXT[: TEXT.index("springt")]]  # the second continues without "fox"
    full_sampling = SamplingConfig(max_words=12)
    full = generate_hat(model, prompts, full_sampling)
    assert full[0][:3] == [b" quick", b" brown", b" fox"] and len(full[0]) == 12
    assert b"fox" not in b"".join(full[1])
    sampling = SamplingConfig(max_words=12, stop=("fox", "never there"))
    early = generate_hat(model, prompts, sampling)
    assert early[0] == full[0][:3]  # ends with the word that completed "fox"
    assert early[1] == full[1]  # the other row of the batch goes on
    texts, full_texts = (generate_hat_texts(model, prompts, s) for s in (sampling, full_sampling))
    assert [cut_at_stops(t, sampling.stop) for t in texts] == [cut_at_stops(t, sampling.stop) for t in full_texts]
    assert texts[0] == "ick brown fox"


def test_generation_past_the_sequence_length_rebuilds_the_cache():
    model = tiny_model(init_std=0.2, seq_words=6).eval()
    words = generate_hat(model, ["a b c d e f g h i"], SamplingConfig(max_words=15))[0]
    assert len(words) == 15 or words[-1] == END_OF_DOC_WORD


def test_prompt_words_start_the_document_and_leave_the_last_word_unfinished():
    assert prompt_words("The qu", 32) == ([END_OF_DOC_WORD, b"The"], b" qu")
    assert prompt_words("The ", 32) == ([END_OF_DOC_WORD, b"The"], b" ")
    assert prompt_words("", 32) == ([END_OF_DOC_WORD], b"")


@pytest.mark.parametrize(
    "prompt",
    ["", "The ", "The qu", TEXT[: TEXT.index("快速") + 2]],
    ids=["empty", "trailing-space", "inside-a-word", "cjk"],
)
def test_a_memorised_text_continues_from_prompts_as_users_write_them(overfit_model, prompt):
    model, _, _ = overfit_model
    assert prompt + generate_text(model, prompt, SamplingConfig(max_words=60)) == TEXT


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(["The quick brown fox jumps over the lazy dog. 快速的狐狸。 Быстрая лиса."] * 4, 300)


def test_cached_baseline_generation_equals_the_uncached_generator(tokenizer):
    torch.manual_seed(0)
    model = Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, init_std=0.2)).eval()
    greedy = SamplingConfig(max_words=8)
    prompts = ["The quick brown fox", "", "Быстрая"]
    assert generate_baseline(model, tokenizer, prompts, greedy) == [
        generate_baseline_uncached(model, tokenizer, p, greedy) for p in prompts
    ]
    short = Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, seq_tokens=5))
    assert generate_baseline(short, tokenizer, ["The quick brown fox jumps"], greedy)[0]
