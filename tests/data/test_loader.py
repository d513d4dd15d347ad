import time

import pytest

from hierpt.data.loader import DeterministicLoader, LoaderState, word_batch
from tests.fixtures.shards import sample_documents, write_shard_set

MAX_WORD_BYTES, SEQ_WORDS = 32, 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("shards"))
    manifest = write_shard_set(url, sample_documents(30), SEQ_WORDS, MAX_WORD_BYTES, rows_per_file=20, row_group_size=6)
    return url, manifest


def loader(url, world_size, rank, state=None, global_batch=8, micro_batch=2, seed=3):
    return DeterministicLoader(url, seed, global_batch, micro_batch, rank, world_size, word_batch(MAX_WORD_BYTES), state)


def global_steps(url, world_size, steps, state=None):
    """Per step, the (position, row, words) of every sample, gathered over all ranks in rank order."""
    ranks = [loader(url, world_size, r, state) for r in range(world_size)]
    out = []
    for _ in range(steps):
        step = []
        for rank in ranks:
            for micro in rank.next_step():
                step += [(p, r, rank.rows.sequence(r)) for p, r in zip(micro.positions, micro.rows)]
        out.append(step)
    return out, ranks[0].state


def test_global_order_is_independent_of_world_size(shards):
    url, _ = shards
    one, state_one = global_steps(url, 1, 5)
    for world_size in (2, 4):
        other, state = global_steps(url, world_size, 5)
        assert other == one
        assert state == state_one
    positions = [p for step in one for p, _, _ in step]
    assert positions == list(range(40))


def test_each_epoch_visits_every_row_once_in_a_seeded_order(shards):
    url, manifest = shards
    n = manifest.total_rows
    first = loader(url, 1, 0)
    epoch0 = [first.row_of(p) for p in range(n)]
    epoch1 = [first.row_of(p) for p in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))
    assert epoch0 != epoch1
    assert epoch0 == [loader(url, 2, 1).row_of(p) for p in range(n)]
    assert epoch0 != [loader(url, 1, 0, seed=4).row_of(p) for p in range(n)]


def test_resume_from_state_continues_exactly(shards):
    url, manifest = shards
    straight, _ = global_steps(url, 2, 6)
    _, state = global_steps(url, 2, 3)
    assert state.samples_consumed == 24 and state.epoch == 24 // manifest.total_rows
    resumed, _ = global_steps(url, 1, 3, state=state)
    assert resumed == straight[3:]


def test_micro_batches_hold_the_rank_slice_as_tensors(shards):
    url, _ = shards
    micro_batches = loader(url, 2, 1).next_step()
    assert [m.positions for m in micro_batches] == [[4, 5], [6, 7]]
    word_bytes, lengths = micro_batches[0].inputs["word_bytes"], micro_batches[0].inputs["lengths"]
    assert word_bytes.shape[:2] == lengths.shape and lengths.shape[0] == 2
    assert word_bytes.shape[2] <= MAX_WORD_BYTES


def test_resume_cost_does_not_grow_with_samples_consumed(shards):
    url, manifest = shards

    def first_step_seconds(consumed):
        state = LoaderState(
            samples_consumed=consumed, epoch=consumed // manifest.total_rows, fingerprint=manifest.fingerprint
        )
        start = time.perf_counter()
        loader(url, 2, 0, state).next_step()
        return time.perf_counter() - start

    first_step_seconds(0)  # warm imports and the OS file cache
    assert first_step_seconds(10**12) < 10 * first_step_seconds(0) + 0.05


def test_fingerprint_mismatch_on_resume_is_refused(shards):
    url, _ = shards
    foreign = LoaderState(samples_consumed=8, epoch=0, fingerprint="0" * 32)
    with pytest.raises(ValueError, match="fingerprint"):
        loader(url, 2, 0, foreign)


def test_global_batch_must_split_over_workers_and_micro_batches(shards):
    url, _ = shards
    with pytest.raises(ValueError, match="global_batch 8 is not a multiple of workers \\(3\\)"):
        loader(url, 3, 0)
