"""Rows by row group: O(files) state, footers read only for the files touched, one request per run of
neighbouring row groups, and a cache that drops row groups whose rows were all handed out first."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from hierpt.data import row_groups
from hierpt.data.row_groups import ShardRows
from tests.fixtures.shards import sample_documents, write_shard_set

MAX_WORD_BYTES, SEQ_WORDS = 32, 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Files of 40 rows in row groups of 4."""
    url = str(tmp_path_factory.mktemp("shards"))
    documents = sample_documents(300)
    return url, write_shard_set(url, documents, SEQ_WORDS, MAX_WORD_BYTES, rows_per_file=40, row_group_size=4)


def test_start_up_reads_nothing_and_locating_reads_the_footers_of_the_files_touched_only(shards):
    url, manifest = shards
    rows = ShardRows(url, manifest)
    assert rows.requests == 0 and rows.bytes_read == 0
    files, groups, within = rows.locate(np.array([41, 50, 79]))
    assert files.tolist() == [1, 1, 1] and groups.tolist() == [0, 2, 9] and within.tolist() == [1, 2, 3]
    assert rows.requests == 1 and list(rows._footers) == [1]


@pytest.mark.parametrize("max_gap, requests", [(row_groups.MAX_GAP_BYTES, 1), (0, 3)])
def test_neighbouring_row_groups_needed_soon_come_in_one_request(shards, monkeypatch, max_gap, requests):
    """Row group 0 of file 1 is needed now, 1 and 2 soon after (one request with it), 7 soon but not next to them
    (left for later); unless the bytes between two groups' words chunks exceed the gap limit."""
    url, manifest = shards
    monkeypatch.setattr(row_groups, "MAX_GAP_BYTES", max_gap)
    rows = ShardRows(url, manifest)
    rows.fetch_ahead(np.array([41]), later=np.array([45, 50, 70]))
    for group in range(3):  # waits for the reads under way
        rows.group(1, group)
    assert rows.requests == 1 + requests and rows.groups_read == 3
    expected = pq.read_table(f"{url}/{manifest.files[1].path}", columns=["words"]).column(0).to_pylist()[:12]
    assert rows.sequences(np.arange(40, 52)) == expected
    assert rows.requests == 1 + requests
    rows.close()


def test_a_footer_longer_than_the_first_read_costs_one_more_request(shards, monkeypatch):
    url, manifest = shards
    monkeypatch.setattr(row_groups, "FOOTER_TAIL_BYTES", 16)
    rows = ShardRows(url, manifest)
    assert rows.footer(0).group_starts.tolist() == list(range(0, 44, 4))
    assert rows.requests == 2


def test_a_row_group_whose_rows_were_all_handed_out_is_dropped_first(shards):
    url, manifest = shards
    sizes = [ShardRows(url, manifest).group(0, g).nbytes for g in range(3)]
    rows = ShardRows(url, manifest, cache_bytes=sizes[1] + sizes[2])
    rows.sequences(np.array([4]))  # row group 1: one of four rows handed out
    rows.sequences(np.arange(4))  # row group 0: all, and used more recently
    rows.group(0, 2)
    assert list(rows._groups) == [(0, 1), (0, 2)]
