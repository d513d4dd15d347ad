"""Deterministic, world-size-independent training data order over a shard set (docs/design.md, "Data order").

Global sample g (0, 1, 2, ...) is row ``BlockOrder.rows(g)`` of the shard set (hierpt/data/order.py: a keyed
permutation of blocks dealt to lanes, computed per sample in O(1) memory). Step s consumes global samples
[s·B, (s+1)·B); rank r of W takes the r-th contiguous slice of B/W samples and cuts it into micro-batches, so
the partition into micro-batches (and therefore the gradient of a step) does not depend on W. The resumable
state is `LoaderState`: the position, the order's parameters and the manifest fingerprint. Resuming at sample
10^9 costs what resuming at 0 costs.

A background thread prepares the next steps (reads their row groups, hierpt/data/row_groups.py, and collates
them) while the current step computes; `last_wait_s` is how long the last `next_step` waited for it. The
loader does not know the model: `collate` turns rows (word lists, or BPE id lists of token shards) into the
model's keyword inputs (`word_batch`, `BPETokenizer.batch`).
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from hierpt.data.order import ORDER_VERSION, BlockOrder
from hierpt.data.row_groups import CACHE_BYTES, ShardRows
from hierpt.data.shards import Manifest, read_manifest
from hierpt.splitting import words_to_tensors

BLOCK_GROUPS = 8  # row groups per order block: a block straddles one more, so ~1 + 1/8 reads per row group
PREFETCH_STEPS = 2  # steps collated ahead of the loop
READ_AHEAD_STEPS = 16  # steps whose row groups are being fetched ahead (in parallel, hierpt/data/row_groups.py)
SOON_STEPS = 40  # at most: steps after those whose row groups join a request for their file (and footers are read)
PLAN_STEPS = 32  # steps whose rows one call of the order computes: numpy's cost per call is shared by them

Collate = Callable[[Sequence[list]], dict[str, torch.Tensor]]


class LoaderState(BaseModel):
    """What a checkpoint stores to resume the data order exactly. States written before `order_version`
    existed read as version 1 (and are refused: their order is no longer computed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    samples_consumed: int = 0
    epoch: int = 0
    fingerprint: str
    order_version: int = 1
    block_rows: int = 0  # order parameters (version 2): kept from the first start, whatever the job says later
    pieces: int = 0
    lanes: int = 0


class MicroBatch(NamedTuple):
    inputs: dict[str, torch.Tensor]  # the model's keyword arguments
    positions: list[int]  # global sample numbers g
    rows: list[int]  # shard-set row of each sample


def batch_splits(global_batch: int, world_size: int, micro_batch: int) -> bool:
    """Whether every rank gets the same whole number of micro-batches per step."""
    return global_batch % (world_size * micro_batch) == 0


def accumulation_steps(global_batch: int, world_size: int, micro_batch: int) -> int:
    """Micro-batches per rank and step: the global batch must split evenly over workers x micro_batch."""
    if not batch_splits(global_batch, world_size, micro_batch):
        raise ValueError(
            f"global_batch {global_batch} is not a multiple of workers ({world_size}) x micro_batch ({micro_batch})"
        )
    return global_batch // (world_size * micro_batch)


def word_batch(max_word_bytes: int) -> Collate:
    """The HAT's inputs for rows of words: ``word_bytes`` [m, N, L] uint8 and ``lengths`` [m, N]."""

    def collate(rows: Sequence[list[bytes]]) -> dict[str, torch.Tensor]:
        word_bytes, lengths = words_to_tensors(rows, max_word_bytes)
        return {"word_bytes": word_bytes, "lengths": lengths}

    return collate


def check_resumable(state: LoaderState, manifest: Manifest, url: str) -> None:
    """Refuses, in one line, a state saved on other data or on another order."""
    if state.fingerprint != manifest.fingerprint:
        raise ValueError(
            f"data.shards {url} has fingerprint {manifest.fingerprint}, but the checkpoint was trained on "
            f"{state.fingerprint}: refusing to resume on different data (start a new run, or use init_from)"
        )
    if state.order_version != ORDER_VERSION:
        raise ValueError(
            f"the checkpoint's data order is version {state.order_version}, this hierpt computes version "
            f"{ORDER_VERSION}: resuming would repeat and skip samples (start a new run; init_from with "
            "optimizer_state: keep keeps its weights and optimizer)"
        )


class DeterministicLoader:
    """Yields, step after step, this rank's micro-batches of the global batch."""

    def __init__(
        self,
        url: str,
        seed: int,
        global_batch: int,
        micro_batch: int,
        rank: int,
        world_size: int,
        collate: Collate,
        state: LoaderState | None = None,
        cache_bytes: int = CACHE_BYTES,
        prefetch_steps: int = PREFETCH_STEPS,
    ):
        accumulation_steps(global_batch, world_size, micro_batch)
        manifest = read_manifest(url)  # not kept: `self.rows` keeps O(files) of it, no per-row-group list
        self.total_rows, self.fingerprint = manifest.total_rows, manifest.fingerprint
        if self.total_rows == 0:
            raise ValueError(f"{url}: the shard set holds no rows")
        if state is not None:
            check_resumable(state, manifest, url)
        self.rows = ShardRows(url, manifest, cache_bytes)
        if state is None:
            block_rows, pieces, lanes = BLOCK_GROUPS * self.rows.typical_group_rows(), BLOCK_GROUPS, global_batch
        else:
            block_rows, pieces, lanes = state.block_rows, state.pieces, state.lanes
        self.order = BlockOrder(seed, self.total_rows, block_rows, lanes, pieces)
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.rank, self.world_size, self.collate = rank, world_size, collate
        self.samples_consumed = 0 if state is None else state.samples_consumed
        self.prefetch_steps, self.last_wait_s = prefetch_steps, 0.0
        self._ready: queue.Queue | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def state(self) -> LoaderState:
        return LoaderState(
            samples_consumed=self.samples_consumed,
            epoch=self.samples_consumed // self.total_rows,
            fingerprint=self.fingerprint,
            order_version=ORDER_VERSION,
            block_rows=self.order.block_rows,
            pieces=self.order.block_rows // self.order.piece_rows,
            lanes=self.order.lanes,
        )

    def row_of(self, position: int) -> int:
        return int(self.order.rows(np.array([position]))[0])

    def rank_positions(self, samples_consumed: int | None = None) -> range:
        """Global sample numbers this rank trains on in the step that starts at `samples_consumed` (default:
        the next step)."""
        per_rank = self.global_batch // self.world_size
        begin = (self.samples_consumed if samples_consumed is None else samples_consumed) + self.rank * per_rank
        return range(begin, begin + per_rank)

    def step_rows(self, samples_consumed: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, rows) of this rank's samples in the step that starts at `samples_consumed`."""
        return self.plan(samples_consumed, 1)[0]

    def plan(self, samples_consumed: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`step_rows` of `steps` consecutive steps from `samples_consumed`, in one call of the order."""
        first = self.rank_positions(samples_consumed)
        positions = np.arange(steps)[:, None] * self.global_batch + np.arange(first.start, first.stop)
        return list(zip(positions, self.order.rows(positions.ravel()).reshape(positions.shape)))

    def step_at(self, samples_consumed: int) -> list[MicroBatch]:
        """This rank's micro-batches of the step that starts at `samples_consumed` (reads what it needs)."""
        return self._micro_batches(*self.step_rows(samples_consumed))

    def _micro_batches(self, positions: np.ndarray, rows: np.ndarray) -> list[MicroBatch]:
        sequences = self.rows.sequences(rows)
        micro_batches = []
        for begin in range(0, len(positions), self.micro_batch):
            end = begin + self.micro_batch
            inputs = self.collate(sequences[begin:end])
            micro_batches.append(MicroBatch(inputs, positions[begin:end].tolist(), rows[begin:end].tolist()))
        return micro_batches

    def next_step(self) -> list[MicroBatch]:
        """This rank's micro-batches for the next step; advances the state by one global batch."""
        start = time.perf_counter()
        if self.prefetch_steps == 0:
            micro_batches = self.step_at(self.samples_consumed)
        else:
            if self._ready is None:
                self._ready = queue.Queue(maxsize=self.prefetch_steps)
                self._reader = threading.Thread(target=self._prefetch, args=(self.samples_consumed,), daemon=True)
                self._reader.start()
            micro_batches = self._ready.get()
            if isinstance(micro_batches, BaseException):
                raise micro_batches
        self.last_wait_s = time.perf_counter() - start
        self.samples_consumed += self.global_batch
        return micro_batches

    def _prefetch(self, samples_consumed: int) -> None:
        """The reader thread: prepares steps in order, up to `prefetch_steps` ahead of the training loop, and
        has the row groups of the (up to) `READ_AHEAD_STEPS` after them fetched meanwhile, with the row groups
        of the same files that the (up to) `SOON_STEPS` after those need (one request per run of neighbouring
        row groups), and the footers of all of them. An error is handed to the training loop, which raises it."""
        try:
            planned: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
            horizon = READ_AHEAD_STEPS + SOON_STEPS
            asked, footers_asked = 0, False  # asked: the first planned steps, whose row groups were asked for
            while not self._stop.is_set():
                while len(planned) <= horizon:
                    planned.extend(self.plan(samples_consumed + len(planned) * self.global_batch, PLAN_STEPS))
                rows = [r for _, r in itertools.islice(planned, horizon + 1)]
                self.rows.fetch_footers(np.concatenate(rows[-1:] if footers_asked else rows))
                footers_asked = True
                ahead, soon = self._read_ahead_steps()
                for step in range(asked, ahead + 1):
                    later = np.concatenate([rows[step][:0], *rows[step + 1 : step + 1 + soon]])
                    self.rows.fetch_ahead(rows[step], later)
                asked = max(asked, ahead + 1) - 1
                self._hand_over(self._micro_batches(*planned.popleft()))
                samples_consumed += self.global_batch
        except Exception as error:
            self._hand_over(error)

    def _read_ahead_steps(self) -> tuple[int, int]:
        """(steps whose row groups are read ahead, steps after those whose row groups may join a request): as
        many as the cache holds. Over h steps each of the rank's lanes reads about 1 + h / piece_rows row
        groups; reading more than fit would evict row groups before their rows are used and read them again."""
        group_bytes = self.rows.mean_group_bytes()
        if not group_bytes:
            return READ_AHEAD_STEPS, 0
        lanes = min(self.global_batch // self.world_size, self.order.lanes)
        fits = int(self.order.piece_rows * (self.rows.cache_bytes / (lanes * group_bytes) - 1))
        ahead = min(max(fits, 1), READ_AHEAD_STEPS)
        return ahead, min(max(fits - ahead, 0), SOON_STEPS)

    def _hand_over(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Stops the reader threads and waits for them (a thread left inside pyarrow can abort the interpreter's
        exit); they finish the step they are preparing."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join()
        self.rows.close()
