import random
from collections import Counter

import pytest

from hierpt.eval.perturb import PERTURBATIONS, perturb, perturb_words
from hierpt.splitting import split_words

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "Grüße", "Straße", "naïve", "été", "über", "a", "I", "ok")


def long_text(count: int = 3000, seed: int = 5) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + rng.choice(["", "", ",", "."]) for _ in range(count)) + "\n你好世界。"


def words_of(text: str) -> list[str]:
    return [w.decode() for w in split_words(text)]


def letters(word: str) -> list[str]:
    return [c for c in word if c.isalnum()]


def non_letters(word: str) -> list[tuple[int, str]]:
    return [(i, c) for i, c in enumerate(word) if not c.isalnum()]


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_same_seed_same_output_and_other_seed_other_output(kind):
    text = long_text()
    assert perturb(text, kind, seed=3) == perturb(text, kind, seed=3)
    if kind != "all_caps":
        assert perturb(text, kind, seed=3) != perturb(text, kind, seed=4)
        assert perturb(text, kind, seed=3) != text


@pytest.mark.parametrize("kind", ["permute", "replace", "delete"])
def test_about_ten_percent_of_words_change(kind):
    original = words_of(long_text())
    rng = random.Random(0)
    perturbed, changed = perturb_words(original, kind, rng)
    differing = sum(a != b for a, b in zip(original, perturbed))
    assert differing == changed
    needs = {
        "permute": lambda ls: len(set(ls)) >= 2,
        "replace": lambda ls: len(ls) >= 1,
        "delete": lambda ls: len(ls) >= 2,
    }
    eligible = sum(needs[kind](letters(w)) for w in original)
    assert 0.08 * eligible < changed < 0.12 * eligible


def test_permute_shuffles_letters_and_keeps_whitespace_and_punctuation():
    original = words_of(long_text())
    perturbed, changed = perturb_words(original, "permute", random.Random(1))
    assert changed > 0
    for before, after in zip(original, perturbed):
        assert Counter(letters(before)) == Counter(letters(after))
        assert non_letters(before) == non_letters(after)


def test_replace_changes_exactly_one_letter_to_a_letter_of_the_document():
    original = words_of(long_text())
    alphabet = {c for w in original for c in w if c.isalnum()}
    perturbed, changed = perturb_words(original, "replace", random.Random(2))
    assert changed > 0
    for before, after in zip(original, perturbed):
        diffs = [(x, y) for x, y in zip(before, after) if x != y]
        assert len(before) == len(after) and len(diffs) <= 1
        assert all(y.isalnum() and y in alphabet for _, y in diffs)


def test_delete_removes_one_letter_and_never_a_whole_word():
    original = words_of(long_text())
    perturbed, changed = perturb_words(original, "delete", random.Random(3))
    assert changed > 0
    for before, after in zip(original, perturbed):
        if before != after:
            assert len(letters(after)) == len(letters(before)) - 1 >= 1
            assert [c for _, c in non_letters(after)] == [c for _, c in non_letters(before)]
            assert "".join(letters(after)) in {
                "".join(letters(before)[:i] + letters(before)[i + 1 :]) for i in range(len(letters(before)))
            }


def test_all_caps_upper_cases_everything():
    text = long_text(50)
    assert perturb(text, "all_caps", seed=0) == text.upper()


def test_rate_zero_changes_nothing_and_bad_arguments_are_refused():
    text = long_text(200)
    for kind in ("permute", "replace", "delete"):
        assert perturb(text, kind, seed=0, rate=0.0) == text
    with pytest.raises(ValueError, match="unknown word perturbation 'typo'"):
        perturb(text, "typo", seed=0)
    with pytest.raises(ValueError, match="rate=1.5"):
        perturb(text, "permute", seed=0, rate=1.5)


def test_perturbation_ignores_the_global_random_state():
    text = long_text(300)
    random.seed(1)
    first = perturb(text, "replace", seed=9)
    random.seed(2)
    assert perturb(text, "replace", seed=9) == first
