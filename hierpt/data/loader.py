"""Deterministic, world-size-independent training data order over a shard set (DESIGN.md "Deterministic data order").

Global sample g (0, 1, 2, ...) is row ``permutation(epoch = g // rows)[g % rows]`` of the shard set, with one
seeded permutation per epoch. Step s consumes global samples [s·B, (s+1)·B); rank r of W takes the r-th
contiguous slice of B/W samples and cuts it into micro-batches, so the partition into micro-batches (and
therefore the gradient of a step) does not depend on W. The resumable state is `LoaderState`: two integers
and the manifest fingerprint. Resuming at sample 10^9 costs one permutation, like resuming at 0.

Rows are read by random access: Parquet row groups are read on demand and kept in a small LRU cache. The
loader does not know the model: `collate` turns rows (word lists, or BPE id lists of token shards) into the
model's keyword inputs (`word_batch`, `BPETokenizer.batch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict

from hierpt.data.shards import Manifest, read_manifest
from hierpt.splitting import words_to_tensors

ROW_GROUP_CACHE = 256

Collate = Callable[[Sequence[list]], dict[str, torch.Tensor]]


class LoaderState(BaseModel):
    """What a checkpoint stores to resume the data order exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    samples_consumed: int = 0
    epoch: int = 0
    fingerprint: str


class MicroBatch(NamedTuple):
    inputs: dict[str, torch.Tensor]  # the model's keyword arguments
    positions: list[int]  # global sample numbers g
    rows: list[int]  # shard-set row of each sample


def word_batch(max_word_bytes: int) -> Collate:
    """The HAT's inputs for rows of words: ``word_bytes`` [m, N, L] uint8 and ``lengths`` [m, N]."""

    def collate(rows: Sequence[list[bytes]]) -> dict[str, torch.Tensor]:
        word_bytes, lengths = words_to_tensors(rows, max_word_bytes)
        return {"word_bytes": word_bytes, "lengths": lengths}

    return collate


class ShardRows:
    """Random access to the rows (sequence column: words or tokens) of a shard set by global row index."""

    def __init__(self, url: str, manifest: Manifest):
        self.column = manifest.column
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.paths = [f"{self.root}/{f.path}" for f in manifest.files]
        self.file_starts = np.cumsum([0] + [f.rows for f in manifest.files])
        self._groups: dict[int, np.ndarray] = {}  # file index -> first row of each row group
        self._read_group = functools.lru_cache(maxsize=ROW_GROUP_CACHE)(self._read_group_uncached)

    def _group_starts(self, file_index: int) -> np.ndarray:
        if file_index not in self._groups:
            with self.fs.open(self.paths[file_index], "rb") as f:
                meta = pq.ParquetFile(f).metadata
            counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            if sum(counts) != self.file_starts[file_index + 1] - self.file_starts[file_index]:
                raise ValueError(f"{self.paths[file_index]}: row count differs from the manifest (shard set changed)")
            self._groups[file_index] = np.cumsum([0] + counts)
        return self._groups[file_index]

    def _read_group_uncached(self, file_index: int, group: int) -> list[list]:
        with self.fs.open(self.paths[file_index], "rb") as f:
            table = pq.ParquetFile(f).read_row_group(group, columns=[self.column])
        return table.column(self.column).to_pylist()

    def sequence(self, row: int) -> list:
        file_index = int(np.searchsorted(self.file_starts, row, side="right")) - 1
        local = row - int(self.file_starts[file_index])
        starts = self._group_starts(file_index)
        group = int(np.searchsorted(starts, local, side="right")) - 1
        return self._read_group(file_index, group)[local - int(starts[group])]


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
    ):
        if global_batch % (world_size * micro_batch):
            raise ValueError(
                f"global_batch {global_batch} is not a multiple of workers ({world_size}) x micro_batch ({micro_batch})"
            )
        self.manifest = read_manifest(url)
        if self.manifest.total_rows == 0:
            raise ValueError(f"{url}: the shard set holds no rows")
        if state is not None and state.fingerprint != self.manifest.fingerprint:
            raise ValueError(
                f"data.shards {url} has fingerprint {self.manifest.fingerprint}, but the checkpoint was trained on "
                f"{state.fingerprint}: refusing to resume on different data (start a new run, or use init_from)"
            )
        self.rows = ShardRows(url, self.manifest)
        self.seed, self.global_batch, self.micro_batch = seed, global_batch, micro_batch
        self.rank, self.world_size, self.collate = rank, world_size, collate
        self.samples_consumed = 0 if state is None else state.samples_consumed
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def state(self) -> LoaderState:
        return LoaderState(
            samples_consumed=self.samples_consumed,
            epoch=self.samples_consumed // self.manifest.total_rows,
            fingerprint=self.manifest.fingerprint,
        )

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of all rows for one epoch (cached: a step touches at most two epochs)."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, rng.permutation(self.manifest.total_rows))
        return self._order[1]

    def row_of(self, position: int) -> int:
        epoch, index = divmod(position, self.manifest.total_rows)
        return int(self.order(epoch)[index])

    def rank_positions(self) -> range:
        """Global sample numbers this rank trains on in the current step."""
        per_rank = self.global_batch // self.world_size
        begin = self.samples_consumed + self.rank * per_rank
        return range(begin, begin + per_rank)

    def next_step(self) -> list[MicroBatch]:
        """This rank's micro-batches for the next step; advances the state by one global batch."""
        positions = list(self.rank_positions())
        micro_batches = []
        for begin in range(0, len(positions), self.micro_batch):
            chunk = positions[begin : begin + self.micro_batch]
            rows = [self.row_of(p) for p in chunk]
            micro_batches.append(MicroBatch(self.collate([self.rows.sequence(r) for r in rows]), chunk, rows))
        self.samples_consumed += self.global_batch
        return micro_batches
