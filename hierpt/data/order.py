"""The training data order as a function, not an array: global sample → shard-set row in O(1) memory and time.

Rows are cut into blocks of `block_rows` consecutive rows (a few Parquet row groups). Per epoch, a keyed
bijection (a Feistel network with cycle walking) permutes the blocks, and the permuted blocks are dealt to
`lanes` streams: lane ℓ reads blocks ℓ, ℓ + lanes, ℓ + 2·lanes, ... of the permuted sequence, each block as
`pieces` consecutive pieces (about one row group each), each piece's rows in a keyed shuffled order. Epoch
position i belongs to lane i mod lanes, so one global batch of `lanes` consecutive samples holds one row from
each of `lanes` random blocks (the batch mixes like `lanes` random draws), while a rank, whose samples are a contiguous slice of the batch, keeps reading the same few lanes:
it reads about two row groups per lane at a time, each row group about once per epoch, whatever the world size.
Each lane's stream is rotated by a lane-dependent offset so lanes change blocks on different steps (no step
has to fetch every lane's next block at once).

The blocks the lanes cannot share evenly (fewer than `lanes`) end the epoch, one lane each, followed by the
short last block (fewer than `block_rows` rows) in a keyed shuffle of its own. Every row is visited
exactly once per epoch; nothing depends on the world size; any position is computed directly (no replay).
"""

from __future__ import annotations

import numpy as np

ORDER_VERSION = 3  # 1: a materialised permutation of all rows (before issue 11); 2: Feistel over an even bit count
ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: round r's key is key + r·_GOLDEN, hashed by `mix` in F


def mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed 64-bit hash of each uint64 (wrapping arithmetic)."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def keyed_permutation(values: np.ndarray, size: int, keys: np.ndarray) -> np.ndarray:
    """A keyed bijection of [0, size) applied to each value: a Feistel network over the fewest bits that cover
    `size` (its two halves differ by a bit when that number is odd), iterated until the result lands inside
    [0, size) (cycle walking keeps it a bijection). `keys` may differ per element. The domain is < 2·size, so
    a value walks fewer than 2 times on average (a domain of even bits, < 4·size, cost twice that)."""
    values = np.asarray(values, dtype=np.uint64)
    keys = np.broadcast_to(np.asarray(keys, dtype=np.uint64), values.shape)
    low_bits = np.uint64(max(int(size - 1).bit_length(), 2) // 2)
    high_bits = np.uint64(max(int(size - 1).bit_length(), 2)) - low_bits
    low_mask, high_mask = (np.uint64(1) << low_bits) - np.uint64(1), (np.uint64(1) << high_bits) - np.uint64(1)
    round_keys = keys + np.arange(ROUNDS, dtype=np.uint64).reshape((ROUNDS,) + (1,) * keys.ndim) * _GOLDEN
    out, pending = values.copy(), np.arange(values.size)
    flat = out.reshape(-1)
    while pending.size:
        x, key = flat[pending], round_keys.reshape(ROUNDS, -1)[:, pending]
        high, low = x >> low_bits, x & low_mask
        for round_index in range(ROUNDS):  # each round changes one half by a keyed hash of the other
            if round_index % 2:
                low ^= mix(high ^ key[round_index]) & low_mask
            else:
                high ^= mix(low ^ key[round_index]) & high_mask
        flat[pending] = (high << low_bits) | low
        pending = pending[flat[pending] >= np.uint64(size)]
    return out


def epoch_key(seed: int, epoch: np.ndarray, stream: int) -> np.ndarray:
    """Independent keys per (seed, epoch, stream): the block permutation, block shuffles, the tail shuffle."""
    seed_key = mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return mix(mix(np.asarray(epoch, dtype=np.uint64) ^ seed_key) + np.uint64(stream))


class BlockOrder:
    """The order of one shard set for one seed: ``rows(positions)`` maps global samples to rows.

    Holds a few integers, whatever the number of rows (the order's memory is O(1)).
    """

    def __init__(self, seed: int, total_rows: int, block_rows: int, lanes: int, pieces: int = 1):
        if total_rows < 1 or lanes < 1 or pieces < 1 or block_rows < 1 or block_rows % pieces:
            raise ValueError(
                f"order needs rows, lanes, pieces >= 1 and block_rows a multiple of pieces, got {total_rows}, "
                f"{lanes}, {pieces}, {block_rows}"
            )
        self.seed, self.total_rows, self.block_rows, self.lanes = seed, total_rows, block_rows, lanes
        self.piece_rows = block_rows // pieces
        self.full_blocks = total_rows // block_rows
        self.blocks_per_lane = self.full_blocks // lanes  # lane streams of equal length; the rest is the tail
        self.laned_rows = self.blocks_per_lane * lanes * block_rows

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Shard-set rows of global sample positions (any epochs), as int64."""
        positions = np.asarray(positions, dtype=np.int64)
        epoch, index = np.divmod(positions, self.total_rows)
        rows = np.empty(positions.shape, dtype=np.int64)
        laned = index < self.laned_rows
        if laned.any():
            rows[laned] = self._laned_rows(epoch[laned], index[laned])
        if (~laned).any():
            rows[~laned] = self._tail_rows(epoch[~laned], index[~laned] - self.laned_rows)
        return rows

    def _block(self, epoch: np.ndarray, slot: np.ndarray) -> np.ndarray:
        return keyed_permutation(slot, self.full_blocks, epoch_key(self.seed, epoch, 0)).astype(np.int64)

    def _block_row(self, epoch: np.ndarray, slot: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Row at `offset` of the block in permuted `slot`: its pieces of `piece_rows` rows (about a row group)
        in order, each piece's rows in a keyed shuffle, so a lane needs about two row groups at a time."""
        block = self._block(epoch, slot)
        piece, within = np.divmod(offset, self.piece_rows)
        piece_keys = mix(epoch_key(self.seed, epoch, 1) ^ mix(block.astype(np.uint64)) ^ piece.astype(np.uint64))
        shuffled = keyed_permutation(within, self.piece_rows, piece_keys).astype(np.int64)
        return block * self.block_rows + piece * self.piece_rows + shuffled

    def _laned_rows(self, epoch: np.ndarray, index: np.ndarray) -> np.ndarray:
        step, lane = np.divmod(index, self.lanes)
        lane_rows = self.blocks_per_lane * self.block_rows
        stream = (step + lane * self.block_rows // self.lanes) % lane_rows  # rotated: lanes switch blocks apart
        in_lane, offset = np.divmod(stream, self.block_rows)
        return self._block_row(epoch, in_lane * self.lanes + lane, offset)

    def _tail_rows(self, epoch: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The epoch's last rows: the full blocks left after the lanes' share, one lane each (fewer lanes than a
        batch: such a batch mixes fewer blocks), then the short last block, shuffled."""
        left_blocks = self.full_blocks - self.blocks_per_lane * self.lanes
        rows = np.empty(index.shape, dtype=np.int64)
        in_blocks = index < left_blocks * self.block_rows
        if in_blocks.any():
            step, lane = np.divmod(index[in_blocks], left_blocks)
            rows[in_blocks] = self._block_row(epoch[in_blocks], lane + self.blocks_per_lane * self.lanes, step)
        if (~in_blocks).any():
            short = self.total_rows - self.full_blocks * self.block_rows
            offset = index[~in_blocks] - left_blocks * self.block_rows
            shuffled = keyed_permutation(offset, short, epoch_key(self.seed, epoch[~in_blocks], 2)).astype(np.int64)
            rows[~in_blocks] = self.full_blocks * self.block_rows + shuffled
        return rows
