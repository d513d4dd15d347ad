"""The loader on a real S3-compatible server (SeaweedFS): the same samples as from a local copy, and reads of
what Parquet asks for (ranged GETs of column chunks and footers), not whole objects."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from hierpt.data.loader import DeterministicLoader, word_batch
from tests.fixtures.shards import sample_documents, write_shard_set

MAX_WORD_BYTES, SEQ_WORDS = 32, 16

pytestmark = pytest.mark.integration


def test_s3_shards_give_the_local_samples_and_read_only_the_chunks_they_need(s3, tmp_path):
    documents = sample_documents(300)
    s3_url, local_url = f"s3://{s3.new_bucket()}/shards", str(tmp_path / "shards")
    for url in (s3_url, local_url):
        manifest = write_shard_set(url, documents, SEQ_WORDS, MAX_WORD_BYTES, rows_per_file=40, row_group_size=4)
    remote, local = (DeterministicLoader(u, 1, 8, 2, 1, 2, word_batch(MAX_WORD_BYTES)) for u in (s3_url, local_url))
    for _ in range(manifest.total_rows // 8):
        for a, b in zip(remote.next_step(), local.next_step()):
            assert a.rows == b.rows and all((a.inputs[k] == b.inputs[k]).all() for k in a.inputs)
    remote.close(), local.close()

    files = {int(f) for f in remote.rows.locate(np.arange(manifest.total_rows))[0]}
    words_chunks = footers = 0
    for index in files:
        metadata = pq.read_metadata(f"{local_url}/{manifest.files[index].path}")
        footers += metadata.serialized_size + 8
        groups = range(metadata.num_row_groups)
        words_chunks += sum(metadata.row_group(g).column(0).total_compressed_size for g in groups)
    assert remote.rows.bytes_read <= 1.5 * words_chunks + 2 * footers  # one epoch at world size 2, this rank
