import pytest
import torch
import torch.nn.functional as F

from hierpt.data.bpe import BPETokenizer
from hierpt.eval.scoring import score, score_baseline, score_hat
from hierpt.model.baseline import Baseline, BaselineConfig
from hierpt.model.generate import allowed_at, allowed_bytes
from hierpt.splitting import END_OF_DOC_WORD, WORD_MARK, split_words, words_to_tensors

from tests.fixtures.models import MAX_BYTES, tiny_model

REQUESTS = [
    ("The qu", "ick brown"),  # continues the context's last word
    ("The", " quick"),  # ends it: the [W] after "The" belongs to the continuation
    ("", "Der Hund läuft"),
    ("快速", "的狐狸"),
    ("The quick brown fox", ""),
    ("Быстрая лиса ", "прыгает."),
]


def brute_force_hat(model, context: str, continuation: str) -> tuple[float, bool]:
    """Sum of log p over the continuation's bytes and the [W] marks it decides, position by position."""
    words = [END_OF_DOC_WORD, *split_words(context + continuation, MAX_BYTES)]
    with torch.no_grad():
        logits, _ = model.predict(*words_to_tensors([words], MAX_BYTES))
    logp = F.log_softmax(logits.float(), -1)
    start = len(context.encode())
    end = start + len(continuation.encode())
    masks = allowed_bytes(torch.device("cpu"))
    total, greedy, offset = 0.0, True, 0
    for j, word in enumerate(words[1:]):
        for position in range(len(word) + 1):
            if start <= offset + position < end:
                target = word[position] if position < len(word) else WORD_MARK
                total += float(logp[j, position, target])
                allowed = allowed_at(position, MAX_BYTES, masks)
                greedy &= int(logits[j, position].masked_fill(~allowed, float("-inf")).argmax()) == target
        offset += len(word)
    return total, greedy


def test_hat_scores_equal_a_brute_force_computation_from_predict_in_any_batching():
    model = tiny_model(init_std=0.1).eval()
    expected = [brute_force_hat(model, c, x) for c, x in REQUESTS]
    for budget in (8192, 40):  # all at once, and a few words per forward
        scores = score_hat(model, REQUESTS, budget)
        assert [s.logprob for s in scores] == pytest.approx([e[0] for e in expected], abs=1e-4)
        assert [s.greedy for s in scores] == [e[1] for e in expected]
    assert scores[4] == (0.0, True)  # an empty continuation


def test_hat_scores_chain_over_a_split_text():
    model = tiny_model(init_std=0.1).eval()
    whole, context, rest = score_hat(model, [("", "The quick brown"), ("", "The qu"), ("The qu", "ick brown")])
    assert whole.logprob == pytest.approx(context.logprob + rest.logprob, abs=1e-4)


def test_greedy_is_true_exactly_where_the_memorised_text_continues(overfit_model):
    model, _, _ = overfit_model
    right, wrong = score(model, None, [("The quick", " brown fox"), ("The quick", " green fox")])
    assert right.greedy and not wrong.greedy
    assert right.logprob > wrong.logprob


def test_a_request_longer_than_the_sequence_is_scored_in_windows():
    model = tiny_model(init_std=0.1, seq_words=4).eval()
    text = "one two three four five six seven eight nine"
    (long,) = score_hat(model, [("one two", text[7:])])
    assert long.logprob < 0 and torch.isfinite(torch.tensor(long.logprob))


@pytest.fixture(scope="module")
def baseline_and_tokenizer():
    tokenizer = BPETokenizer.train(["The quick brown fox jumps. Der Hund läuft über die Brücke."] * 4, 300)
    torch.manual_seed(0)
    return Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, init_std=0.1)).eval(), tokenizer


def test_baseline_scores_equal_a_brute_force_computation_from_logits(baseline_and_tokenizer):
    model, tokenizer = baseline_and_tokenizer
    for budget in (8192, 16):
        scores = score_baseline(model, tokenizer, REQUESTS, budget)
        for (context, continuation), got in zip(REQUESTS, scores):
            head = [tokenizer.eod_id, *tokenizer.encode(context)]
            ids = head + tokenizer.encode(continuation)
            with torch.no_grad():
                logits = model.logits(torch.tensor([ids]))[0].float()
            logp = F.log_softmax(logits, -1)
            expected = sum(float(logp[t - 1, ids[t]]) for t in range(len(head), len(ids)))
            greedy = all(int(logits[t - 1, : tokenizer.vocab_size].argmax()) == ids[t] for t in range(len(head), len(ids)))
            assert got.logprob == pytest.approx(expected, abs=1e-4)
            assert got.greedy == greedy
