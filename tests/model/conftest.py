"""A tiny HAT memorising one multilingual text, shared by the model and generation tests."""

import pytest
import torch

from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import END_OF_DOC_WORD, document_words, words_to_tensors

TEXT = (
    "The quick brown fox jumps over the lazy dog. Der schnelle braune Fuchs springt. "
    "Быстрая лиса прыгает. 快速的狐狸跳。"
)
MAX_BYTES = 32


def tiny_model(seed: int = 0, **overrides) -> HAT:
    torch.manual_seed(seed)
    return HAT(HATConfig.from_name("tiny", **overrides))


def batch(*texts: str):
    return words_to_tensors([document_words(t, MAX_BYTES) for t in texts], MAX_BYTES)


@pytest.fixture(scope="session")
def overfit_model():
    """A tiny model trained to memorise TEXT after the document start [S] (as training packs documents),
    with its loss history and last output."""
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    word_bytes, lengths = words_to_tensors([[END_OF_DOC_WORD, *document_words(TEXT, MAX_BYTES)]], MAX_BYTES)
    losses = []
    for _ in range(400):
        out = model(word_bytes, lengths)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return model.eval(), losses, out
