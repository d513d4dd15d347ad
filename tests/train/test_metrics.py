"""Per-step metrics: exact bits/byte over micro-batches, MFU as a fraction of a data-sheet peak, the FLOP count
MFU rests on checked against what the model really computes, and the gauges on Ray's Prometheus endpoint."""

import math
import re
import time
import urllib.request
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.utils.flop_counter import FlopCounterMode

from hierpt.model.hat import HATConfig, flops_per_word
from hierpt.train.metrics import MetricsLog, RayGauges, StepSums, peak_flops_per_device, progress_line
from tests.fixtures.models import TEXT, batch, tiny_model

TINY = HATConfig.from_name("tiny")


@pytest.fixture
def one_rank(tmp_path):
    """A one-process gloo group: the metrics all-reduce over ranks."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def output(loss: float, nll_sum: float, utf8_bytes: int, words: int):
    tensor = lambda value: torch.tensor(value, dtype=torch.float64)  # noqa: E731
    return SimpleNamespace(loss=tensor(loss), nll_sum=tensor(nll_sum), utf8_bytes=tensor(utf8_bytes),
                           units=tensor(words))  # fmt: skip


def one_step(peak_flops, seconds: float = 1000.0, world_size: int = 1) -> dict:
    """One step of two micro-batches (200 words of 5 bytes) that took `seconds` (long: a busy machine's delays
    between here and the step's clock stay far below the 1% the checks allow)."""
    log = MetricsLog(TINY, total_steps=4, world_size=world_size, peak_flops=peak_flops, is_logger=True,
                     tracking=None)  # fmt: skip
    log.started = time.perf_counter() - seconds
    sums = StepSums(torch.device("cpu"))
    sums.add(output(loss=2.0, nll_sum=300.0, utf8_bytes=400, words=80))
    sums.add(output(loss=4.0, nll_sum=500.0, utf8_bytes=600, words=120))
    return log.step(0, sums, samples_consumed=8, lr=1e-3, grad_norm=1.0, data_wait_s=0.0)


def test_bits_per_byte_is_exact_over_micro_batches_and_mfu_a_fraction_of_the_peak(one_rank, capsys):
    peak = 1e8
    metrics = one_step(peak)
    assert metrics["bits_per_byte"] == pytest.approx(800 / math.log(2) / 1000)
    assert metrics["loss"] == pytest.approx(3.0) and metrics["words_per_s"] == pytest.approx(0.2, rel=1e-2)
    expected = flops_per_word(TINY, 1000 / 200) * 200 / 1000.0 / peak  # model FLOPs of 200 words of 5 bytes
    assert metrics["mfu"] == pytest.approx(expected, rel=1e-2) and 0 < metrics["mfu"] < 1
    shown = capsys.readouterr().out
    assert "mfu: model FLOP/s as a fraction of 1 x 0.0001 TFLOP/s peak" in shown
    assert f"mfu {metrics['mfu']:.3f}" in shown.splitlines()[-1] and "%" not in shown


def test_a_cpu_without_a_configured_peak_reports_no_mfu_and_says_how_to_get_one(one_rank, capsys):
    peak = peak_flops_per_device(None, torch.device("cpu"))
    assert peak is None and peak_flops_per_device(5e11, torch.device("cpu")) == 5e11
    metrics = one_step(peak)
    assert "mfu" not in metrics
    shown = capsys.readouterr().out
    assert "mfu: not computed on CPU" in shown and "set peak_flops" in shown
    assert " mfu " not in shown.splitlines()[-1]


def test_a_step_is_one_plain_line_with_its_bar_and_numbers():
    metrics = {"step": 5, "loss": 3.0, "bits_per_byte": 1.15, "words_per_s": 210.4, "bytes_per_s": 1052.0,
               "lr": 1e-3, "grad_norm": 0.5, "data_wait_s": 0.0012}  # fmt: skip
    line = progress_line(metrics, total_steps=20, unit="words")
    assert line == ("[#####...............] step 5/20 loss 3.0000 bpb 1.150 words/s 210 bytes/s 1052 lr 1.00e-03 "
                    "gnorm 0.500 data wait 0.001s")  # fmt: skip
    assert "mfu 0.420" in progress_line({**metrics, "mfu": 0.42}, 20, "words")
    done = progress_line({**metrics, "step": 20, "tokens_per_s": 9.0}, 20, "tokens")
    assert done.startswith(f"[{'#' * 20}] step 20/20") and "tokens/s 9 " in done and "\n" not in done


def test_the_flop_count_is_at_most_what_the_model_computes_and_near_it():
    """Model FLOPs (hat.flops_per_word) count the words' real bytes; the model also computes padding (words
    grouped by length, sequences padded to the batch's longest), so the count must stay below the measured
    forward + backward FLOPs, and not far below (a missing backward pass alone would be a third)."""
    model = tiny_model()
    word_bytes, lengths = batch(TEXT, TEXT[::-1])
    with FlopCounterMode(display=False) as counter:
        out = model(word_bytes, lengths)
        out.loss.backward()
    words = out.units.item()
    counted = flops_per_word(model.config, out.utf8_bytes.item() / words) * words
    assert 0.6 < counted / counter.get_total_flops() <= 1.0


def test_outside_a_train_worker_nothing_is_published():
    assert RayGauges.in_train_worker() is None


@pytest.mark.integration
def test_the_scalars_reach_rays_prometheus_endpoint_tagged_with_the_run(ray_local):
    port = next(node["MetricsExportPort"] for node in ray_local.nodes() if node["Alive"])
    RayGauges("gauges-test").set({"loss": 2.5, "step": 3})
    deadline, scraped = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # the worker reports its metrics to the node's agent every few seconds
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            scraped = answer.read().decode()
        if re.search(r'^ray_hierpt_train_loss\{[^}]*run="gauges-test"[^}]*\} 2\.5$', scraped, re.M):
            break
        time.sleep(1)
    assert re.search(r'^ray_hierpt_train_step\{[^}]*run="gauges-test"[^}]*\} 3\.0$', scraped, re.M), scraped[-2000:]
