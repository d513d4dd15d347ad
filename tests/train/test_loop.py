"""The training step: every micro-batch forward and backward, one optimizer step after the last, exact sums."""

import torch

from hierpt.data.loader import MicroBatch, word_batch
from hierpt.model.hat import HAT, HATConfig
from hierpt.train.loop import train_step
from hierpt.train.metrics import SUMS


class Engine:
    """What train_step needs of a DeepSpeed engine: it accumulates gradients and steps after the last micro-batch."""

    def __init__(self, model: torch.nn.Module, micro_batches: int):
        self.model, self.micro_batches, self.calls = model, micro_batches, 0
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    def __call__(self, **inputs):
        return self.model(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.micro_batches).backward()

    def step(self) -> None:
        self.calls += 1
        if self.calls % self.micro_batches == 0:
            self.optimizer.step()
            self.optimizer.zero_grad()


def test_a_step_sums_its_micro_batches_and_updates_the_weights_once():
    torch.manual_seed(0)
    config = HATConfig.from_name("tiny")
    model = HAT(config)
    collate = word_batch(config.max_word_bytes)
    rows = [[b"\xf9", b"The", b" quick", b" fox", b"\xf9"], [b"\xf9", b"Der", b" Hund", b"\xf9"]]
    micro = [MicroBatch(collate([row]), [i], [i]) for i, row in enumerate(rows)]
    expected = [model(**m.inputs) for m in micro]
    before = [p.detach().clone() for p in model.parameters()]
    engine = Engine(model, len(micro))

    sums = dict(zip(SUMS, train_step(engine, micro, 0.1, torch.device("cpu")).values.tolist()))

    assert engine.optimizer.param_groups[0]["lr"] == 0.1 and engine.calls == 2
    assert sums["micro_batches"] == 2
    assert sums["nll_sum"] == sum(float(o.nll_sum) for o in expected)
    assert sums["utf8_bytes"] == sum(int(o.utf8_bytes) for o in expected) == len("The quick fox") + len("Der Hund")
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
