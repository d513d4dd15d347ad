"""Per-step training metrics: exact global sums over ranks, MFU, console progress and TensorBoard (rank 0).

bits/byte = summed cross-entropy / ln 2 / UTF-8 text bytes predicted (the model output's sums), so it is exact
however the batch is split over micro-batches and ranks, and comparable between the HAT and the baseline.
MFU = achieved model FLOP/s (FLOPs per unit x units/s; units are words for the HAT, tokens for the baseline)
/ (peak FLOP/s per device x devices), a fraction everywhere (Ray's metrics, TensorBoard, the console). The peak is
a data sheet's: the job spec's `peak_flops`, or the table below for a known GPU. A CPU has none: a start-up
matmul probe measured the machine's load, not its peak (MFU of 98-555% on a busy machine, issue 16), so without
`peak_flops` a CPU run reports no MFU.
Rank 0 also sets every scalar as a gauge on Ray's Prometheus endpoint (`ray_hierpt_train_<key>{run=...}`), so
Ray's dashboard and a Grafana on the cluster show training beside the cluster's own metrics. `data_wait_s` is the longest time any rank's step waited for its batch
(the loader's prefetch thread fell behind): ranks meet at every all-reduce, so the slowest one sets the pace.
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist

from hierpt.model.family import family_of
from hierpt.train.config import RunTracking
from hierpt.train.tracking import Tracker

# Dense bf16 tensor-core peak FLOP/s per device, from the vendors' data sheets (no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}

# Order of the summed quantities in a step's sum tensor.
SUMS = ("loss", "micro_batches", "nll_sum", "utf8_bytes", "units")


def peak_flops_per_device(configured: float | None, device: torch.device) -> float | None:
    """From the job spec, else the table for a known GPU; None on CPU (no MFU)."""
    if configured:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in PEAK_FLOPS.items():
            if key in name:
                return flops
        raise ValueError(f"no peak FLOP/s known for GPU {name!r}: set peak_flops in the job spec")
    return None


def progress_line(m: dict, total_steps: int, unit: str) -> str:
    """Rank 0's console line of a step (metrics as `MetricsLog.step` returns them): plain text, no ANSI codes,
    as readable in a CI log as on a terminal."""
    width = 20
    done = int(width * m["step"] / total_steps)
    mfu = f" mfu {m['mfu']:.3f}" if "mfu" in m else ""
    return (
        f"[{'#' * done}{'.' * (width - done)}] step {m['step']}/{total_steps} loss {m['loss']:.4f} "
        f"bpb {m['bits_per_byte']:.3f} {unit}/s {m[f'{unit}_per_s']:.0f} bytes/s {m['bytes_per_s']:.0f} "
        f"lr {m['lr']:.2e} gnorm {m['grad_norm']:.3f}{mfu} data wait {m['data_wait_s']:.3f}s"
    )


class RayGauges:
    """The step's scalars as Ray gauges (ray.util.metrics), tagged with the run's name."""

    def __init__(self, run: str):
        self.run, self.gauges = run, {}

    @classmethod
    def in_train_worker(cls) -> RayGauges | None:
        """Gauges for the run of this Ray Train worker; outside one (unit tests) none."""
        import ray.train

        try:
            return cls(ray.train.get_context().get_experiment_name())
        except RuntimeError:  # "Ray Train function utilities not initialized"
            return None

    def set(self, metrics: dict) -> None:
        from ray.util.metrics import Gauge

        for key, value in metrics.items():
            if key not in self.gauges:
                self.gauges[key] = Gauge(f"hierpt_train_{key}", f"hierpt training: {key}, last step", ("run",))
            self.gauges[key].set(float(value), tags={"run": self.run})


class StepSums:
    """Sums over this rank's micro-batches of one step; `global_totals` all-reduces them over ranks."""

    def __init__(self, device: torch.device):
        self.values = torch.zeros(len(SUMS), dtype=torch.float64, device=device)

    def add(self, output) -> None:
        self.values += torch.stack(
            [
                output.loss.detach().double(),
                torch.ones((), dtype=torch.float64, device=self.values.device),
                output.nll_sum.double(),
                output.utf8_bytes.double(),
                output.units.double(),
            ]
        )

    def global_totals(self) -> dict[str, float]:
        totals = self.values.clone()
        dist.all_reduce(totals)
        return dict(zip(SUMS, totals.tolist()))


class MetricsLog:
    """Turns step sums into the metrics dict reported to Ray; rank 0 also prints and writes the run's trackers
    (hierpt/train/tracking.py: TensorBoard, W&B, MLflow), the spec once as hyperparameters."""

    def __init__(
        self,
        model_config,
        total_steps: int,
        world_size: int,
        peak_flops: float | None,
        is_logger: bool,
        tracking: RunTracking | None,
        start_step: int = 0,
        hparams: dict | None = None,
    ):
        self.model_config, self.total_steps = model_config, total_steps
        self.family = family_of(model_config)
        self.world_size, self.peak_flops, self.is_logger = world_size, peak_flops, is_logger
        self.tracker = Tracker(tracking, first_step=start_step + 1) if is_logger and tracking else None
        if self.tracker is not None and hparams is not None:
            self.tracker.hparams(hparams, ["train/loss", "train/bits_per_byte"])
        self.gauges = RayGauges.in_train_worker() if is_logger else None
        if is_logger:
            print(self.mfu_note(), flush=True)
        self.started = time.perf_counter()

    def mfu_note(self) -> str:
        if self.peak_flops is None:
            return "mfu: not computed on CPU (no data-sheet peak; set peak_flops per device in the job spec)"
        return f"mfu: model FLOP/s as a fraction of {self.world_size} x {self.peak_flops / 1e12:g} TFLOP/s peak"

    def step(
        self, step: int, sums: StepSums, samples_consumed: int, lr: float, grad_norm: float | None, data_wait_s: float
    ) -> dict:
        totals = sums.global_totals()
        wait = torch.tensor([data_wait_s], dtype=torch.float64, device=sums.values.device)
        dist.all_reduce(wait, op=dist.ReduceOp.MAX)
        seconds = time.perf_counter() - self.started
        self.started = time.perf_counter()
        units, text_bytes = totals["units"], totals["utf8_bytes"]
        units_per_s = units / seconds
        metrics = {
            "step": step + 1,  # steps completed
            "loss": totals["loss"] / totals["micro_batches"],
            "bits_per_byte": totals["nll_sum"] / math.log(2) / max(text_bytes, 1),
            f"{self.family.unit}_per_s": units_per_s,
            "bytes_per_s": text_bytes / seconds,
            "samples_consumed": samples_consumed,
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "step_seconds": seconds,
            "data_wait_s": wait.item(),
        }
        if self.peak_flops is not None:
            achieved = self.family.flops_per_unit(self.model_config, text_bytes / max(units, 1)) * units_per_s
            metrics["mfu"] = achieved / (self.peak_flops * self.world_size)
        if self.is_logger:
            self._show(metrics)
        if self.gauges is not None:
            self.gauges.set(metrics)
        return metrics

    def _show(self, m: dict) -> None:
        print(progress_line(m, self.total_steps, self.family.unit), flush=True)
        if self.tracker is not None:
            self.tracker.log({f"train/{key}": value for key, value in m.items() if key != "step"}, m["step"])

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
