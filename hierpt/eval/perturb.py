"""The paper's robustness perturbations (§4.4), on HAT words so "word" means one thing.

`permute`, `replace` and `delete` each pick every word with probability `rate` (10%) and change its letters
(alphanumeric characters; the whitespace and punctuation the splitter attaches to a word stay in place):
permute shuffles them, replace swaps one for another letter of the same document (so the alphabet stays the
document's language), delete drops one. Words that cannot change (no letters; one repeated letter for
permute; a single letter for delete, which would remove the word) are never picked. `all_caps` upper-cases
the whole text. Everything is deterministic given the seed: each document draws from its own generator,
seeded by (seed, perturbation, text), so the result does not depend on the order of documents.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hierpt.splitting import DEFAULT_MAX_WORD_BYTES, split_words

RATE = 0.1
WORD_PERTURBATIONS = ("permute", "replace", "delete")
PERTURBATIONS = (*WORD_PERTURBATIONS, "all_caps")


def _letter_positions(word: str) -> list[int]:
    return [i for i, char in enumerate(word) if char.isalnum()]


def _permute(word: str, letters: list[int], rng: random.Random, alphabet: list[str]) -> str:
    chars = list(word)
    original = [chars[i] for i in letters]
    shuffled = original[:]
    while shuffled == original:  # terminates: only words with two different letters are picked
        rng.shuffle(shuffled)
    for i, char in zip(letters, shuffled):
        chars[i] = char
    return "".join(chars)


def _replace(word: str, letters: list[int], rng: random.Random, alphabet: list[str]) -> str:
    i = rng.choice(letters)
    return word[:i] + rng.choice([c for c in alphabet if c != word[i]]) + word[i + 1 :]


def _delete(word: str, letters: list[int], rng: random.Random, alphabet: list[str]) -> str:
    i = rng.choice(letters)
    return word[:i] + word[i + 1 :]


_EDITS: dict[str, tuple[Callable[[list[str]], bool], Callable]] = {
    "permute": (lambda letters: len(set(letters)) >= 2, _permute),
    "replace": (lambda letters: len(letters) >= 1, _replace),
    "delete": (lambda letters: len(letters) >= 2, _delete),
}


def perturb_words(words: list[str], kind: str, rng: random.Random, rate: float = RATE) -> tuple[list[str], int]:
    """The words with `kind` applied to each eligible word with probability `rate`, and how many changed."""
    if kind not in _EDITS:
        raise ValueError(f"unknown word perturbation {kind!r}; choose one of {list(_EDITS)}")
    eligible, edit = _EDITS[kind]
    alphabet = sorted({char for word in words for char in word if char.isalnum()})
    if kind == "replace" and len(alphabet) < 2:
        return list(words), 0
    out, changed = [], 0
    for word in words:
        letters = _letter_positions(word)
        if eligible([word[i] for i in letters]) and rng.random() < rate:
            word = edit(word, letters, rng, alphabet)
            changed += 1
        out.append(word)
    return out, changed


def perturb(text: str, kind: str, seed: int, rate: float = RATE, max_word_bytes: int = DEFAULT_MAX_WORD_BYTES) -> str:
    """`text` under perturbation `kind` (one of PERTURBATIONS), the same for the same (text, kind, seed)."""
    if kind == "all_caps":
        return text.upper()
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate={rate} must be within [0, 1]")
    # The splitter cuts over-long words at character boundaries, so every word decodes on its own.
    words = [word.decode("utf-8") for word in split_words(text, max_word_bytes)]
    rng = random.Random(f"{seed}:{kind}:{text}")
    return "".join(perturb_words(words, kind, rng, rate)[0])
