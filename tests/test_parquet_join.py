"""Row groups encoded apart and joined (prep/io/parquet_join.py): the same bytes as pyarrow's own writer; and the
writer's threads around it (a shard sealed while the next one is taken in)."""

from __future__ import annotations

import io
import struct
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prep.io.parquet_join import JoinedParquetFile, encode_row_group, read_footer, write_footer


def _tables(count: int, seed: int = 0) -> list[pa.Table]:
    """Tables shaped like prep's output: ids, token lists, numbers with nulls, a label with a dictionary."""
    rng = np.random.default_rng(seed)
    tables = []
    for t in range(count):
        rows = int(rng.integers(1, 400))
        lengths = rng.integers(0, 60, rows)
        tokens = pa.ListArray.from_arrays(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32),
                                          pa.array(rng.integers(0, 50_257, int(lengths.sum())), pa.uint32()))
        score = pa.array([None if v < 0.1 else float(v) for v in rng.random(rows)], pa.float64())
        tables.append(pa.table({
            "id": pa.array([f"doc-{t}-{i}" for i in range(rows)]),
            "input_ids": tokens,
            "num_tokens": pa.array(lengths, pa.int32()),
            "score": score,
            "label": pa.array(rng.choice(["en", "zh", "code"], rows)),
        }))
    return tables


def _sequential(tables: list[pa.Table], dictionary: list[str]) -> bytes:
    """The oracle: pyarrow's ParquetWriter, one row group per table, on one thread."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, tables[0].schema, compression="zstd", write_statistics=True,
                          use_dictionary=dictionary) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=table.num_rows)
    return sink.getvalue().to_pybytes()


def _joined(tables: list[pa.Table], dictionary: list[str], threads: int) -> bytes:
    sink = io.BytesIO()
    with ThreadPoolExecutor(threads) as pool:
        joined = JoinedParquetFile(sink, tables[0].schema, pool, "zstd", dictionary, max_pending=threads + 1)
        for table in tables:
            joined.add(table)
        joined.close()
    return sink.getvalue()


def _footer(data: bytes) -> bytes:
    (length,) = struct.unpack("<I", data[-8:-4])
    return data[-8 - length:-8]


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("count", [1, 3, 20])  # 20: more row groups than a short Thrift list header holds (15)
def test_joined_file_is_byte_identical_to_pyarrows_writer(count, threads):
    tables = _tables(count, seed=count)
    expected = _sequential(tables, ["label"])
    assert _joined(tables, ["label"], threads) == expected


def test_joined_file_reads_back_in_every_reader(tmp_path):
    tables = _tables(17, seed=5)
    path = tmp_path / "joined.parquet"
    path.write_bytes(_joined(tables, ["label"], 3))
    whole = pa.concat_tables(tables)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 17
    assert [parquet.metadata.row_group(i).num_rows for i in range(17)] == [t.num_rows for t in tables]
    assert parquet.read().equals(whole)
    assert pl.read_parquet(path)["num_tokens"].to_list() == whole.column("num_tokens").to_pylist()
    (total,) = duckdb.sql(f"select count(*), sum(len(input_ids)) from '{path}'").fetchall()
    assert total == (whole.num_rows, sum(whole.column("num_tokens").to_pylist()))


def test_footer_round_trips_through_thrift_unchanged():
    footer = _footer(encode_row_group(_tables(1, seed=9)[0], "zstd", ["label"]).to_pybytes())
    fields = read_footer(footer)
    assert write_footer(fields) == footer
    assert {fid for fid, _type, _value in fields} >= {1, 2, 3, 4}  # version, schema, num_rows, row_groups


def test_an_empty_join_is_refused():
    with ThreadPoolExecutor(1) as pool:
        joined = JoinedParquetFile(io.BytesIO(), pa.schema([("x", pa.int64())]), pool, "zstd", False, max_pending=2)
        with pytest.raises(ValueError, match="at least one row group"):
            joined.close()


def test_shard_writer_files_do_not_depend_on_its_encoder_threads(tmp_path, monkeypatch):
    """A shard of many row groups, encoded by 1 and by 4 threads: the same bytes, all rows in input order."""
    from prep.io import writer

    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 2**14)
    tables = _tables(12, seed=3)
    written = []
    for threads in (1, 4):
        out = tmp_path / f"threads-{threads}"
        out.mkdir()
        core = writer.ShardWriter(out, shard_bytes=10**9, compression="zstd", start_seq=0, entries=[],
                                  encoder_threads=threads)
        for seq, table in enumerate(tables):
            core.add_chunk(seq, {"rows": table.num_rows, "text_bytes": 1, "documents_in": table.num_rows,
                                 "quarantine": []})
            core.add_part(seq, 0, table.num_rows, table, {"documents": table.num_rows, "filtered": 0, "tokens": 0})
        core.finish({}, None)
        (shard,) = out.glob("part-*.parquet")
        assert pq.ParquetFile(shard).num_row_groups > 4
        assert pq.read_table(shard).equals(pa.concat_tables(tables))
        written.append(shard.read_bytes())
    assert written[0] == written[1]


def test_a_shards_end_does_not_hold_the_writers_main_thread(tmp_path, monkeypatch):
    """Shard 0 is sealed (last row groups, fsync, checksum) in a thread: the next shard's results are taken in
    meanwhile, nothing is committed before it is sealed, and the journal lists the shards in order. Before, the
    seal ran in the main thread, which could not go on to shard 1 until it ended."""
    import json
    import threading

    from prep.io import trainer_formats, writer

    went_on = threading.Event()  # set by this thread once it took shard 1's results in
    seen_by_seal = []
    seal = trainer_formats.ShardFiles.seal

    def slow_seal(files):
        seen_by_seal.append(went_on.wait(timeout=10))
        return seal(files)

    monkeypatch.setattr(trainer_formats.ShardFiles, "seal", slow_seal)
    tables = _tables(2, seed=7)
    core = writer.ShardWriter(tmp_path, shard_bytes=1, compression="zstd", start_seq=0, entries=[])
    for seq, table in enumerate(tables):  # each chunk fills a shard
        core.add_chunk(seq, {"rows": table.num_rows, "text_bytes": 1, "documents_in": table.num_rows,
                             "quarantine": []})
        committed = core.add_part(seq, 0, table.num_rows, table, {"documents": table.num_rows, "filtered": 0,
                                                                  "tokens": 0})
        assert committed == [] and core.entries == []  # shard 0 is still sealing
    went_on.set()
    core.finish({}, None)
    assert seen_by_seal == [True, True]
    journal = [json.loads(line) for line in (tmp_path / "_journal.jsonl").read_text().splitlines()]
    assert [(e["shard"], e["first_seq"], e["rows"]) for e in journal] == [(0, 0, tables[0].num_rows),
                                                                         (1, 1, tables[1].num_rows)]
    assert pq.read_table(tmp_path / journal[1]["file"]).equals(tables[1])


def test_shards_waiting_to_be_sealed_are_bounded(tmp_path, monkeypatch):
    """A slow disk (each seal 0.2 s) under many small shards: no more than MAX_SEALING ended shards wait, each
    holding row groups in memory; then the writer waits for the sealer. All are committed, in order."""
    import time

    from prep.io import trainer_formats, writer

    seal = trainer_formats.ShardFiles.seal

    def slow_seal(files):
        time.sleep(0.2)
        return seal(files)

    monkeypatch.setattr(trainer_formats.ShardFiles, "seal", slow_seal)
    monkeypatch.setattr(writer, "MAX_SEALING", 2)
    tables = _tables(12, seed=11)
    core = writer.ShardWriter(tmp_path, shard_bytes=1, compression="zstd", start_seq=0, entries=[])
    waiting = []
    for seq, table in enumerate(tables):  # each chunk fills a shard
        core.add_chunk(seq, {"rows": table.num_rows, "text_bytes": 1, "documents_in": table.num_rows,
                             "quarantine": []})
        core.add_part(seq, 0, table.num_rows, table, {"documents": table.num_rows, "filtered": 0, "tokens": 0})
        waiting.append(len(core.closing))
    core.finish({}, None)
    assert max(waiting) <= 2 and len(waiting) == 12, waiting  # unbounded: all 12 waited (each seal took 0.2 s)
    assert [e["first_seq"] for e in core.entries] == list(range(12))
    assert pq.read_table(tmp_path).equals(pa.concat_tables(tables))
