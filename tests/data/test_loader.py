import os
import shutil
import time

import numpy as np
import pytest

from hierpt.data.loader import DeterministicLoader, LoaderState, word_batch
from hierpt.data.row_groups import ShardRows
from hierpt.data.shards import read_manifest, write_manifest
from tests.fixtures.shards import sample_documents, write_shard_set

MAX_WORD_BYTES, SEQ_WORDS = 32, 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("shards"))
    manifest = write_shard_set(url, sample_documents(30), SEQ_WORDS, MAX_WORD_BYTES, rows_per_file=20, row_group_size=6)
    return url, manifest


@pytest.fixture(scope="module")
def many_groups(tmp_path_factory):
    """902 rows in 226 row groups of 4 rows (23 files): enough blocks for every lane of a batch of 8."""
    url = str(tmp_path_factory.mktemp("many_groups"))
    documents = sample_documents(300)
    manifest = write_shard_set(url, documents, SEQ_WORDS, MAX_WORD_BYTES, rows_per_file=40, row_group_size=4)
    return url, manifest


def loader(url, world_size, rank, state=None, global_batch=8, micro_batch=2, seed=3, **options):
    collate = word_batch(MAX_WORD_BYTES)
    return DeterministicLoader(url, seed, global_batch, micro_batch, rank, world_size, collate, state, **options)


def global_steps(url, world_size, steps, state=None, **options):
    """Per step, the (position, row, words) of every sample, gathered over all ranks in rank order."""
    ranks = [loader(url, world_size, r, state, **options) for r in range(world_size)]
    out = []
    for _ in range(steps):
        step = []
        for rank in ranks:
            for micro in rank.next_step():
                step += [(p, r, rank.rows.sequence(r)) for p, r in zip(micro.positions, micro.rows)]
        out.append(step)
    for rank in ranks:
        rank.close()
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


def test_each_epoch_visits_every_row_once_in_a_seeded_order(shards, many_groups):
    for url, manifest in (shards, many_groups):
        n = manifest.total_rows
        first = loader(url, 1, 0)
        epoch0, epoch1 = first.order.rows(np.arange(n)).tolist(), first.order.rows(np.arange(n, 2 * n)).tolist()
        assert sorted(epoch0) == sorted(epoch1) == list(range(n))
        assert epoch0 != epoch1
        assert epoch0[::37] == [loader(url, 2, 1).row_of(p) for p in range(0, n, 37)]
        assert epoch0 != loader(url, 1, 0, seed=4).order.rows(np.arange(n)).tolist()


def test_resume_from_state_continues_exactly(shards):
    url, manifest = shards
    straight, _ = global_steps(url, 2, 6)
    _, state = global_steps(url, 2, 3)
    assert state.samples_consumed == 24 and state.epoch == 24 // manifest.total_rows
    resumed, _ = global_steps(url, 1, 3, state=state)
    assert resumed == straight[3:]


def test_the_order_keeps_the_parameters_it_started_with(many_groups):
    """A relaunch with another global batch resumes the same order (lanes come from the state), so the samples
    not yet seen in the epoch are exactly the ones still to come."""
    url, manifest = many_groups
    started = loader(url, 1, 0, global_batch=8)
    started.next_step()
    relaunched = loader(url, 1, 0, started.state, global_batch=4, micro_batch=1)
    later = range(8, manifest.total_rows)
    assert [relaunched.row_of(p) for p in later] == [started.row_of(p) for p in later]
    assert relaunched.state.lanes == 8
    started.close()


def test_micro_batches_hold_the_rank_slice_as_tensors(shards):
    url, _ = shards
    micro_batches = loader(url, 2, 1).next_step()
    assert [m.positions for m in micro_batches] == [[4, 5], [6, 7]]
    word_bytes, lengths = micro_batches[0].inputs["word_bytes"], micro_batches[0].inputs["lengths"]
    assert word_bytes.shape[:2] == lengths.shape and lengths.shape[0] == 2
    assert word_bytes.shape[2] <= MAX_WORD_BYTES


def test_resume_cost_does_not_grow_with_samples_consumed(shards):
    url, manifest = shards
    fresh = loader(url, 2, 0).state

    def first_step_seconds(consumed):
        state = fresh.model_copy(update={"samples_consumed": consumed, "epoch": consumed // manifest.total_rows})
        start = time.perf_counter()
        loader(url, 2, 0, state, prefetch_steps=0).next_step()
        return time.perf_counter() - start

    first_step_seconds(0)  # warm imports and the OS file cache
    assert first_step_seconds(10**12) < 10 * first_step_seconds(0) + 0.05


def test_fingerprint_mismatch_on_resume_is_refused(shards):
    url, _ = shards
    foreign = loader(url, 2, 0).state.model_copy(update={"fingerprint": "0" * 32})
    with pytest.raises(ValueError, match="fingerprint"):
        loader(url, 2, 0, foreign)


def test_a_checkpoint_of_the_old_order_is_refused_in_one_line(shards):
    url, manifest = shards
    saved_before_issue_11 = LoaderState.model_validate_json(
        f'{{"samples_consumed": 8, "epoch": 0, "fingerprint": "{manifest.fingerprint}"}}'
    )
    with pytest.raises(ValueError, match="data order is version 1, this hierpt computes version 3") as error:
        loader(url, 2, 0, saved_before_issue_11)
    assert "\n" not in str(error.value)


def test_global_batch_must_split_over_workers_and_micro_batches(shards):
    url, _ = shards
    with pytest.raises(ValueError, match="global_batch 8 is not a multiple of workers \\(3\\)"):
        loader(url, 3, 0)


def test_prefetched_steps_are_the_steps_computed_in_place(many_groups):
    url, _ = many_groups
    ahead, in_place = loader(url, 2, 1), loader(url, 2, 1, prefetch_steps=0)
    for _ in range(12):
        for a, b in zip(ahead.next_step(), in_place.next_step()):
            assert a.positions == b.positions and a.rows == b.rows
            assert all((a.inputs[k] == b.inputs[k]).all() for k in a.inputs)
        assert ahead.last_wait_s >= 0
    assert ahead.state == in_place.state
    ahead.close()


def test_a_plan_of_many_steps_is_those_steps_one_by_one_across_an_epoch_end(many_groups):
    url, manifest = many_groups
    rank = loader(url, 4, 3)
    start = (manifest.total_rows // 8 - 3) * 8
    for step, (positions, rows) in enumerate(rank.plan(start, 7)):
        one_positions, one_rows = rank.step_rows(start + 8 * step)
        assert positions.tolist() == one_positions.tolist() and rows.tolist() == one_rows.tolist()


def test_each_row_group_is_read_about_once_per_epoch_with_a_cache_far_smaller_than_the_shards(many_groups):
    """Read amplification (row-group reads per row group consumed) <= 1.5 at world size 1 and per rank at 2,
    with a cache that holds a quarter of the decoded shard set."""
    url, manifest = many_groups
    everything = ShardRows(url, manifest)
    files, groups, _ = everything.locate(np.arange(manifest.total_rows))
    unique_groups = {(int(f), int(g)) for f, g in zip(files, groups)}
    decoded = sum(everything.group(*key).nbytes for key in unique_groups)
    steps = manifest.total_rows // 8
    for world_size in (1, 2):
        for rank in range(world_size):
            ranked = loader(url, world_size, rank, cache_bytes=decoded // 4, prefetch_steps=0)
            consumed = set()
            for _ in range(steps):
                for micro in ranked.next_step():
                    f, g, _ = ranked.rows.locate(np.array(micro.rows))
                    consumed |= set(zip(f.tolist(), g.tolist()))
            assert ranked.rows._cached_bytes <= decoded // 4
            assert ranked.rows.groups_read <= 1.5 * len(consumed), (world_size, rank)
            assert len(consumed) <= 1.5 * len(unique_groups) / world_size


def test_row_groups_listed_in_the_manifest_are_checked_against_the_files(many_groups, tmp_path):
    url, manifest = many_groups
    copy = tmp_path / "copy"
    shutil.copytree(url, copy)
    listed = [f.model_copy(update={"row_groups": [4] * (f.rows // 4) + [f.rows % 4] * (f.rows % 4 > 0)})
              for f in manifest.files]  # fmt: skip
    write_manifest(str(copy), manifest.model_copy(update={"files": listed}))
    assert [r for r in (loader(str(copy), 1, 0).row_of(p) for p in range(16))] == [
        loader(url, 1, 0).row_of(p) for p in range(16)
    ]
    every_row = np.random.default_rng(0).permutation(manifest.total_rows)
    from_listing, from_footers = ShardRows(str(copy), read_manifest(str(copy))), ShardRows(url, manifest)
    assert all((a == b).all() for a, b in zip(from_listing.locate(every_row), from_footers.locate(every_row)))
    assert from_listing.sequences(every_row) == from_footers.sequences(every_row)
    wrong = [listed[0].model_copy(update={"row_groups": [listed[0].rows]})] + listed[1:]
    write_manifest(str(copy), manifest.model_copy(update={"files": wrong}))
    rows = ShardRows(str(copy), read_manifest(str(copy)))
    with pytest.raises(ValueError, match="row groups differ from the manifest"):
        rows.footer(0)


def test_a_read_error_in_the_reader_thread_reaches_the_training_step(many_groups, tmp_path):
    url, _ = many_groups
    copy = tmp_path / "copy"
    shutil.copytree(url, copy)
    broken = loader(str(copy), 1, 0)
    for name in os.listdir(copy):
        if name.endswith(".parquet"):
            os.remove(copy / name)
    with pytest.raises(FileNotFoundError):
        for _ in range(3):
            broken.next_step()


def test_read_ahead_joins_neighbouring_row_groups_as_far_as_the_cache_holds_them(many_groups):
    """With prefetch on, neighbouring row groups of a file share requests while the cache can hold what is
    read ahead; a smaller cache joins fewer, rather than evicting row groups before their rows are used."""
    url, manifest = many_groups
    everything = ShardRows(url, manifest)
    decoded = sum(everything.group(f, g).nbytes for f in range(len(manifest.files))
                  for g in range(len(everything.footer(f).group_starts) - 1))  # fmt: skip
    steps = manifest.total_rows // 8
    for share, most_requests in ((2, 0.75), (8, 1.5)):
        ranked = loader(url, 1, 0, cache_bytes=decoded // share)
        consumed = set()
        for _ in range(steps):
            for micro in ranked.next_step():
                f, g, _ = ranked.rows.locate(np.array(micro.rows))
                consumed |= set(zip(f.tolist(), g.tolist()))
        ranked.close()
        assert ranked.rows.groups_read <= 1.5 * len(consumed), share
        assert ranked.rows.requests <= most_requests * len(consumed), share
