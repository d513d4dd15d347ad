"""lm-evaluation-harness model `hierpt`: downstream tasks (MMLU, ARC, HellaSwag, ...) for either family's export.

lm-eval 0.4.13 finds models only in its own table (no release reads plugins yet; pyproject.toml declares the
`lm_eval.models` entry point its main branch reads), so this module must be imported for `hierpt` to exist:
`python -m hierpt.eval.harness` is lm-eval's command line with it registered:

    python -m hierpt.eval.harness --model hierpt --model_args checkpoint=EXPORT --tasks arc_easy
    python -m hierpt.eval.harness --model hierpt --model_args checkpoint=EXPORT --tasks my_task --include_path tasks/

In Python, `run_tasks` for a loaded model (what eval jobs call), or `lm_eval.simple_evaluate(model="hierpt",
model_args={"checkpoint": ...})` after importing this module. Requests are scored with `hierpt.eval.scoring`;
`generate_until` generates with the KV-cached generators (`max_gen_toks` is read as words for the HAT), each
row stopping as soon as a stop string appears, and cuts the text at the first one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import lm_eval.models  # noqa: F401  lm-eval's own models, registered before ours (it fills its table lazily)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from hierpt.data.bpe import BPETokenizer
from hierpt.eval.scoring import rolling_requests, score
from hierpt.model.baseline import Baseline
from hierpt.model.export import load_any_export
from hierpt.model.family import continue_texts
from hierpt.model.generate import SamplingConfig
from hierpt.model.hat import HAT

MODEL_NAME = "hierpt"
DEFAULT_GEN_WORDS = 256


@register_model(MODEL_NAME)
class HierptLM(LM):
    """A HAT or baseline export; `batch_size` is in padded positions (words or tokens) per forward (default: the
    device's, `hierpt.eval.evaluate.BATCH_POSITIONS`)."""

    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int | str | None = None, **_ignored):
        super().__init__()
        if not device or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "cpu"  # lm-eval's command line asks for cuda by default, also on CPU-only machines
        self.model, self.tokenizer = load_any_export(checkpoint, device)
        self.budget = int(batch_size) if str(batch_size or "").isdigit() else None

    @classmethod
    def loaded(cls, model: HAT | Baseline, tokenizer: BPETokenizer | None, budget: int | None = None) -> HierptLM:
        """For a model already in memory (an eval job scores the export it loaded for its other metrics)."""
        lm = cls.__new__(cls)
        LM.__init__(lm)
        lm.model, lm.tokenizer, lm.budget = model, tokenizer, budget
        return lm

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [tuple(s) for s in score(self.model, self.tokenizer, [r.args for r in requests], self.budget)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        return [s.logprob for s in score(self.model, self.tokenizer, rolling_requests(texts), self.budget)]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests grouped by generation settings, each group generated as one batch."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(_settings(request.args[1]), []).append(i)
        for (stops, words, temperature), index in groups.items():
            sampling = SamplingConfig(max_words=words, temperature=temperature, stop=stops)
            texts = continue_texts(self.model, self.tokenizer, [requests[i].args[0] for i in index], sampling)
            for i, text in zip(index, texts):
                out[i] = cut_at_stops(text, stops)
        return out


def _settings(kwargs: dict) -> tuple[tuple[str, ...], int, float]:
    until = kwargs.get("until") or ()
    stops = (until,) if isinstance(until, str) else tuple(until)
    temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
    return stops, int(kwargs.get("max_gen_toks", DEFAULT_GEN_WORDS)), temperature


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    ends = [text.find(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text


def run_tasks(
    model: HAT | Baseline,
    tokenizer: BPETokenizer | None,
    tasks: Sequence[str],
    task_dirs: Sequence[str] = (),
    limit: int | None = None,
    budget: int | None = None,
) -> dict[str, dict[str, float]]:
    """Task -> its numeric metrics (lm-eval's `acc,none` as `acc`) for a loaded model, for an eval result."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=list(task_dirs) or None)
    results = lm_eval.simple_evaluate(
        model=HierptLM.loaded(model, tokenizer, budget), tasks=list(tasks), task_manager=manager, limit=limit
    )
    return {
        task: {
            key.split(",")[0]: float(value)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key
        }
        for task, metrics in results["results"].items()
    }


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
