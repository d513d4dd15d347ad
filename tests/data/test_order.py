import pickle

import numpy as np
import pytest

from hierpt.data.order import BlockOrder, keyed_permutation


@pytest.mark.parametrize(
    "rows, block_rows, lanes, pieces",
    [(1, 3, 2, 1), (5, 1, 1, 1), (49, 50, 3, 5), (100, 24, 8, 8), (997, 5, 7, 1), (12_345, 40, 64, 8),
     (20_000, 64, 64, 4)],
)  # fmt: skip
def test_each_epoch_visits_every_row_once_and_epochs_differ(rows, block_rows, lanes, pieces):
    order = BlockOrder(seed=3, total_rows=rows, block_rows=block_rows, lanes=lanes, pieces=pieces)
    epochs = [order.rows(np.arange(e * rows, (e + 1) * rows)) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(rows))
    if rows > 5:
        assert (epochs[0] != epochs[1]).mean() > 0.75 and (epochs[1] != epochs[2]).mean() > 0.75
        other_seed = BlockOrder(seed=4, total_rows=rows, block_rows=block_rows, lanes=lanes, pieces=pieces)
        assert (other_seed.rows(np.arange(rows)) != epochs[0]).mean() > 0.75


def test_any_position_is_computed_directly_and_agrees_with_a_batch_computation():
    order = BlockOrder(seed=11, total_rows=10**9, block_rows=1024, lanes=512)
    far = np.arange(10**15, 10**15 + 4096)
    one_by_one = [int(order.rows(np.array([p]))[0]) for p in far[::97]]
    assert order.rows(far)[::97].tolist() == one_by_one
    assert len(set(order.rows(far).tolist())) == len(far)
    assert len(pickle.dumps(order)) < 1024  # the order's state is a few integers, at 10^9 rows


def test_keyed_permutation_is_a_bijection_for_every_size_and_key():
    for size in (1, 2, 3, 7, 64, 65, 1000):
        for key in (0, 1, 2**63 + 5):
            out = keyed_permutation(np.arange(size), size, np.uint64(key))
            assert sorted(out.tolist()) == list(range(size))


def test_a_global_batch_mixes_languages_and_shards_like_the_corpus():
    """Shard sets are written language by language, file by file: the order must undo that within one batch.

    Tolerance: with one row from each of `lanes` random blocks, a share p has a standard deviation of
    sqrt(p(1-p)/batch); every batch of the epoch (the laned part: all but the last blocks) must hold each
    language and each file within 5 standard deviations (+1 sample) of its share of the corpus.
    """
    batch, rows_per_file = 64, 500
    languages = {"en": 9000, "de": 5000, "fr": 3000, "ja": 2000, "hi": 1000}  # contiguous, as prep writes them
    lang_of_row = np.repeat(np.arange(len(languages)), list(languages.values()))
    rows = len(lang_of_row)
    order = BlockOrder(seed=5, total_rows=rows, block_rows=64, lanes=batch, pieces=4)
    epoch = order.rows(np.arange(order.laned_rows))
    for name, per_row in (("language", lang_of_row), ("file", np.arange(rows) // rows_per_file)):
        share = np.bincount(per_row) / rows
        tolerance = 5 * np.sqrt(batch * share * (1 - share)) + 1
        counts = np.stack([np.bincount(per_row[b], minlength=len(share)) for b in epoch.reshape(-1, batch)])
        worst = np.abs(counts - batch * share).max(axis=0)
        assert (worst <= tolerance).all(), f"{name}: worst deviation {worst} over tolerance {tolerance}"


def test_a_rank_keeps_reading_few_blocks_whatever_the_world_size():
    """Locality: rank r's contiguous slice of each batch stays on its lanes, so over a window of steps it
    touches about one block per lane it serves (plus the next as lanes rotate), not every block, and within
    a few steps about one piece (~ a row group) per lane."""
    batch, block_rows, pieces = 64, 32, 4
    order = BlockOrder(seed=2, total_rows=64 * 32 * 20, block_rows=block_rows, lanes=batch, pieces=pieces)
    for world_size in (1, 4, 16):
        per_rank = batch // world_size
        for rank in (0, world_size - 1):
            steps = np.arange(block_rows)[:, None] * batch + rank * per_rank + np.arange(per_rank)
            blocks = np.unique(order.rows(steps.ravel()) // block_rows)
            assert len(blocks) <= 2 * per_rank, (world_size, rank, len(blocks))
            few_steps = order.rows(steps[: block_rows // pieces].ravel()) // (block_rows // pieces)
            assert len(np.unique(few_steps)) <= 2 * per_rank, (world_size, rank)
