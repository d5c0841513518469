"""Source: every format gives the same documents, chunks are sized and numbered right, bad input is
quarantined with its position, and nothing is lost or doubled."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prep.errors import UserError
from prep.io.sources import InputFile, expand_inputs, iter_chunks, total_input_bytes

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

DOCS = [
    {"id": "d0", "text": "Hello world"},
    {"id": "d1", "text": "line one\nline two\n"},
    {"id": "d2", "text": "中文文本，含标点。"},
    {"id": "d3", "text": 'emoji 😀 and "quotes", commas'},
    {"id": "d4", "text": ""},
    {"id": "d5", "text": "   \t "},
    {"id": "d6", "text": "tab\tsep, backslash \\ and a NUL \x00 inside"},
    {"id": "d7", "text": "x" * 3000},
]


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def read(paths, **kwargs) -> list:
    return list(iter_chunks(expand_inputs([str(p) for p in paths]), **kwargs))


def rows(chunks) -> list[tuple[str, str]]:
    return [(r["id"], r["text"]) for c in chunks for r in c.batch.to_pylist()]


def quarantined(chunks) -> list[dict]:
    return [q for c in chunks for q in c.quarantine]


def write_all_formats(tmp_path: Path, docs: list[dict]) -> dict[str, Path]:
    """The same documents in every supported format, each written by an independent writer."""
    import datasets

    paths = {name: tmp_path / name for name in ("d.jsonl", "d.jsonl.gz", "d.jsonl.zst", "d.parquet", "d.csv")}
    paths["d.jsonl"].write_bytes(jsonl_bytes(docs))
    paths["d.jsonl.gz"].write_bytes(gzip.compress(jsonl_bytes(docs)))
    with pa.CompressedOutputStream(str(paths["d.jsonl.zst"]), "zstd") as out:
        out.write(jsonl_bytes(docs))
    pq.write_table(pa.Table.from_pylist(docs), paths["d.parquet"])
    with open(paths["d.csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(docs)
    datasets.Dataset.from_list(docs).save_to_disk(str(tmp_path / "saved"))
    paths["saved"] = tmp_path / "saved"
    (tmp_path / "txt").mkdir()
    for d in docs:
        (tmp_path / "txt" / f"{d['id']}.txt").write_text(d["text"], encoding="utf-8", newline="")
    paths["txt"] = tmp_path / "txt"
    return paths


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 40])
def test_every_format_gives_the_same_documents(tmp_path, chunk_bytes):
    paths = write_all_formats(tmp_path, DOCS)
    expected = [(d["id"], d["text"]) for d in DOCS]
    for name, path in paths.items():
        chunks = read([path], chunk_bytes=chunk_bytes)
        assert not quarantined(chunks), name
        if name == "txt":  # ids are file names by design; an empty file is no document
            assert rows(chunks) == [(f"{i}.txt", t) for i, t in expected if t]
        else:
            assert rows(chunks) == expected, name
        for c in chunks:
            assert c.batch.schema.names == ["id", "text"]
            assert c.batch.schema.field("text").type == pa.string()
            assert c.batch.schema.field("id").type == pa.string()


def test_expand_inputs_formats_and_display_names(tmp_path):
    paths = write_all_formats(tmp_path, DOCS[:2])
    (tmp_path / "_manifest.json").write_text("{}")
    (tmp_path / ".hidden.jsonl").write_text("{}")
    (tmp_path / "notes.md").write_text("skip me")
    files = expand_inputs([str(tmp_path)])
    assert [(f.display, f.format, f.compression) for f in files] == [
        ("d.csv", "csv", None),
        ("d.jsonl", "jsonl", None),
        ("d.jsonl.gz", "jsonl", "gzip"),
        ("d.jsonl.zst", "jsonl", "zstd"),
        ("d.parquet", "parquet", None),
        ("saved", "hf_dataset", None),
        ("txt/d0.txt", "txt", None),
        ("txt/d1.txt", "txt", None),
    ]
    for f in files:
        on_disk = Path(f.path).glob("data-*.arrow") if f.format == "hf_dataset" else [Path(f.path)]
        assert f.size == sum(p.stat().st_size for p in on_disk)
    assert total_input_bytes(files) == sum(f.size for f in files)
    # Argument order is kept, each expansion is sorted, a file named twice is read once.
    again = expand_inputs([str(paths["d.parquet"]), str(tmp_path / "d.json*"), str(paths["d.parquet"])])
    assert [f.display for f in again] == ["d.parquet", "d.jsonl", "d.jsonl.gz", "d.jsonl.zst"]


def test_display_names_are_relative_and_never_clash(tmp_path):
    for d in ("x/sub", "y/sub"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "a.jsonl").write_text('{"text": "t"}\n')
    assert [f.display for f in expand_inputs([str(tmp_path / "x")])] == ["sub/a.jsonl"]
    assert [f.display for f in expand_inputs([str(tmp_path / "x/**/*.jsonl")])] == ["sub/a.jsonl"]
    both = expand_inputs([str(tmp_path / "x"), str(tmp_path / "y")])
    assert [f.display for f in both] == [str(tmp_path / "x/sub/a.jsonl"), str(tmp_path / "y/sub/a.jsonl")]


def test_dataset_dict_splits_in_sorted_order(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(DOCS[:3]),
                               "test": datasets.Dataset.from_list(DOCS[3:4])})
    dd.save_to_disk(str(tmp_path / "dd"))
    files = expand_inputs([str(tmp_path / "dd")])
    assert [f.display for f in files] == ["dd/test", "dd/train"]
    assert rows(iter_chunks(files)) == [(d["id"], d["text"]) for d in DOCS[3:4] + DOCS[:3]]


def test_user_errors_for_paths(tmp_path):
    with pytest.raises(UserError, match="input not found: .*nope.jsonl"):
        expand_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(UserError, match="input not found"):
        expand_inputs([str(tmp_path / "*.jsonl")])
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(UserError, match=r"unsupported input .*data.xlsx.*\.jsonl"):
        expand_inputs([str(tmp_path / "data.xlsx")])
    with pytest.raises(UserError, match="no input files"):
        expand_inputs([str(tmp_path)])


def greedy_chunks(sizes: list[int], limit: int) -> list[list[int]]:
    """Reference packing: add documents while the chunk's text stays within limit (at least one each)."""
    chunks: list[list[int]] = []
    for i, size in enumerate(sizes):
        if chunks and sum(sizes[j] for j in chunks[-1]) + size <= limit:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def test_chunking_follows_chunk_bytes_huge_docs_and_is_deterministic(tmp_path):
    docs = [{"id": f"n{i}", "text": "é" * (i % 17) * 7} for i in range(300)]
    docs.insert(120, {"id": "huge", "text": "z" * 2_000_000})
    a, b, cs = tmp_path / "a.jsonl.gz", tmp_path / "b.parquet", tmp_path / "c.csv"
    a.write_bytes(gzip.compress(jsonl_bytes(docs)))
    pq.write_table(pa.Table.from_pylist(docs), b, row_group_size=50)
    with open(cs, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["id", "text"]] + [[d["id"], d["text"]] for d in docs])
    limit = 500
    chunks = read([a, b, cs], chunk_bytes=limit)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    # Parquet is cut from its footer: whole row groups packed by the text column's size in the metadata, a
    # larger group alone into ceil(size / limit) ranges of equal rows
    meta = pq.read_metadata(b)
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    expected = []
    for packed in greedy_chunks([g.column(1).total_uncompressed_size for g in groups], limit):
        ids = [docs[g * 50 + j]["id"] for g in packed for j in range(groups[g].num_rows)]
        size, n = sum(groups[g].column(1).total_uncompressed_size for g in packed), len(ids)
        parts = min(-(-size // limit), n) if len(packed) == 1 else 1
        expected += [ids[n * i // parts:n * (i + 1) // parts] for i in range(parts)]
    assert len(expected) > meta.num_row_groups
    got = [[r["id"] for r in c.batch.to_pylist()] for c in chunks if c.source == "b.parquet"]
    assert got == expected
    assert ["huge"] in expected
    for c in chunks:
        assert c.text_bytes == sum(len(t.encode()) for t in c.batch.column("text").to_pylist())
        assert c.text_bytes <= limit or c.batch.num_rows == 1 or c.source == "b.parquet"
    # JSON Lines is cut without parsing: the same packing, by the bytes of each line (newline included)
    line_sizes = [len(line) + 1 for line in jsonl_bytes(docs).split(b"\n")[:-1]]
    expected_lines = [[docs[i]["id"] for i in chunk] for chunk in greedy_chunks(line_sizes, limit)]
    assert [[r["id"] for r in c.batch.to_pylist()] for c in chunks if c.source == "a.jsonl.gz"] == expected_lines
    assert ["huge"] in expected_lines
    # so is CSV, by the bytes of each record; the header is read with the first block
    records = []
    for row in [["id", "text"]] + [[d["id"], d["text"]] for d in docs]:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(row)
        records.append(len(buffer.getvalue().encode()))
    expected_rows = [[docs[i - 1]["id"] for i in chunk if i] for chunk in greedy_chunks(records, limit)]
    assert [[r["id"] for r in c.batch.to_pylist()] for c in chunks if c.source == "c.csv"] == expected_rows
    again = read([a, b, cs], chunk_bytes=limit)
    assert [(c.seq, c.source, c.batch.to_pylist(), c.input_bytes) for c in again] == \
        [(c.seq, c.source, c.batch.to_pylist(), c.input_bytes) for c in chunks]


def test_a_100mb_line_is_read(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"id": "small", "text": "a"}\n{"id": "big", "text": "')
        fh.write(b"y" * 100_000_000)
        fh.write(b'"}\n{"id": "after", "text": "b"}\n')
    chunks = read([path], chunk_bytes=1 << 20, max_document_bytes=101_000_000)
    assert [[r for r in c.batch.column("id").to_pylist()] for c in chunks] == [["small"], ["big"], ["after"]]
    assert chunks[1].text_bytes == 100_000_000
    assert sum(c.input_bytes for c in chunks) == path.stat().st_size


def test_input_bytes_add_up_to_file_sizes(tmp_path):
    docs = [{"id": str(i), "text": f"document {i} " * (i % 50)} for i in range(2000)]
    paths = write_all_formats(tmp_path, docs)
    files = expand_inputs([str(p) for p in paths.values()])
    chunks = list(iter_chunks(files, chunk_bytes=4096))
    for f in files:
        if f.format != "txt":
            mine = [c for c in chunks if c.source == f.display]
            assert len(mine) > 1, f.display
            assert sum(c.input_bytes for c in mine) == f.size, f.display
            assert all(c.input_bytes >= 0 for c in mine)
    assert sum(c.input_bytes for c in chunks) == total_input_bytes(files)


BAD_JSONL = b"".join([
    b'\xef\xbb\xbf{"id": "a", "text": "first"}\r\n',  # 1: BOM and CRLF
    b"\r\n",  # 2: blank
    b'{"text": "no id"}\r\n',  # 3
    b"{bad json\n",  # 4
    b'{"id": "u", "text": "a\xffb"}\n',  # 5: invalid UTF-8
    b'{"id": "m"}\n',  # 6: text missing
    b'{"id": "n", "text": null}\n',  # 7
    b'{"id": "num", "text": 12}\n',  # 8
    b'{"id": "s", "text": "x\\ud800y"}\n',  # 9: lone surrogate
    b"[1, 2]\n",  # 10
    b'"just a string"\n',  # 11
    b"   \n",  # 12: blank
    b'{"id": 10, "text": "  "}\n',  # 13: whitespace text is kept
    b'{"id": null, "text": "nul\\u0000here"}\n',  # 14
    b'{"id": "e", "text": ""}\n',  # 15
    b'{"text": "last line, no newline"}',  # 16
])


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 8])
def test_bad_records_are_quarantined_with_their_line(tmp_path, chunk_bytes):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(BAD_JSONL)
    chunks = read([path], chunk_bytes=chunk_bytes)
    assert rows(chunks) == [("a", "first"), ("bad.jsonl:3", "no id"), ("10", "  "),
                            ("bad.jsonl:14", "nul\x00here"), ("e", ""),
                            ("bad.jsonl:16", "last line, no newline")]
    bad = quarantined(chunks)
    assert [(q["position"], q["source"]) for q in bad] == [(p, "bad.jsonl") for p in range(4, 12)]
    reasons = [q["reason"] for q in bad]
    for got, want in zip(reasons, ["malformed JSON", "invalid UTF-8", "no field 'text'", "null 'text'",
                                   "'text' is a number", "lone surrogate", "not a JSON object",
                                   "not a JSON object"], strict=True):
        assert want in got
    assert bad[0]["raw"] == "{bad json"
    assert bad[3]["raw"] == '{"id": "n", "text": null}'
    assert all(isinstance(q["raw"], str) for q in bad)
    assert sum(c.documents_in for c in chunks) == 6 + 8
    assert sum(c.input_bytes for c in chunks) == len(BAD_JSONL)


def test_long_bad_record_raw_is_truncated(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": ' + "9" * 5000 + "}\n")
    (bad,) = quarantined(read([path]))
    assert bad["raw"] == '{"text": ' + "9" * 991 and bad["position"] == 1


def test_strict_mode_raises_on_the_first_bad_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(BAD_JSONL)
    with pytest.raises(UserError, match=r"bad\.jsonl, line 4: malformed JSON"):
        read([path], strict=True)
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl_bytes(DOCS))
    assert len(rows(read([good], strict=True))) == len(DOCS)


def test_generated_ids_use_line_row_and_index(tmp_path):
    (tmp_path / "j.jsonl").write_text('{"text": "a"}\n\n{"id": null, "text": "b"}\n')
    (tmp_path / "c.csv").write_text('text,id\n"a",\n"b\nc",x\nd,\n')
    pq.write_table(pa.table({"text": ["a", "b", None], "id": pa.array([None, 7, 8])}), tmp_path / "p.parquet")
    got = rows(read([tmp_path / "j.jsonl", tmp_path / "c.csv", tmp_path / "p.parquet"]))
    assert got == [("j.jsonl:1", "a"), ("j.jsonl:3", "b"), ("c.csv:1", "a"), ("x", "b\nc"), ("c.csv:3", "d"),
                   ("p.parquet:0", "a"), ("7", "b")]
    (bad,) = quarantined(read([tmp_path / "p.parquet"]))
    assert (bad["position"], bad["reason"]) == (2, "null 'text'")
    assert json.loads(bad["raw"]) == {"text": None, "id": 8}


def test_csv_bad_rows_and_bom_crlf(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbfid,text,lang\r\n1,"one\r\ntwo",en\r\n2,too,many,fields\r\n'
                     b'3,"bad \xff utf8",en\r\n\r\n4,four,fr\r\n')
    chunks = read([path], keep_columns=["lang"])
    assert [c.batch.to_pylist() for c in chunks] == [[
        {"id": "1", "text": "one\r\ntwo", "lang": "en"}, {"id": "4", "text": "four", "lang": "fr"}]]
    bad = quarantined(chunks)
    assert [(q["position"], q["reason"]) for q in bad] == [
        (2, "expected 3 fields, found 4"), (3, "invalid UTF-8 in 'text'")]
    assert bad[0]["raw"] == "2,too,many,fields"
    assert chunks[0].documents_in == 4


def test_kept_columns_keep_their_order_and_types(tmp_path):
    records = [{"id": i, "text": f"t{i}", "score": i / 2, "n": i, "meta": {"a": i}} for i in range(5)]
    (tmp_path / "k.jsonl").write_bytes(jsonl_bytes(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "k.parquet")
    for name in ("k.jsonl", "k.parquet"):
        (chunk,) = read([tmp_path / name], keep_columns=["n", "score"])
        assert chunk.batch.schema.names == ["id", "text", "n", "score"]
        assert chunk.batch.schema.field("n").type == pa.int64()
        assert chunk.batch.schema.field("score").type == pa.float64()
        assert chunk.batch.column("score").to_pylist() == [i / 2 for i in range(5)]
        assert chunk.batch.column("id").to_pylist() == [str(i) for i in range(5)]


def test_kept_column_type_is_fixed_by_the_first_block(tmp_path):
    """One schema per file: a column null throughout the first block becomes a string column, later
    values are kept as JSON text, and a value that does not fit a typed column is quarantined."""
    records = [{"text": f"t{i}", "tag": None, "n": i} for i in range(5000)]
    records += [{"text": "late", "tag": 5, "n": 1}, {"text": "bad n", "tag": "x", "n": "many"}]
    (tmp_path / "k.jsonl").write_bytes(jsonl_bytes(records))
    chunks = read([tmp_path / "k.jsonl"], keep_columns=["tag", "n"], chunk_bytes=1000)
    assert {(c.batch.schema.field("tag").type, c.batch.schema.field("n").type) for c in chunks} == \
        {(pa.string(), pa.int64())}
    got = [r for c in chunks for r in c.batch.to_pylist()]
    assert got[-1] == {"id": "k.jsonl:5001", "text": "late", "tag": "5", "n": 1}
    assert len(got) == 5001
    (bad,) = quarantined(chunks)
    assert (bad["position"], bad["reason"]) == (5002, "'n' does not fit the column type int64")


def test_missing_text_field_or_kept_column_is_a_user_error(tmp_path):
    (tmp_path / "j.jsonl").write_text('{"id": 1, "content": "x", "lang": "en"}\n')
    (tmp_path / "c.csv").write_text("id,content\n1,x\n")
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "p.parquet")
    msg = r"no field 'text' in j.jsonl: fields are id, content, lang; choose one with --text-field"
    with pytest.raises(UserError, match=msg):
        read([tmp_path / "j.jsonl"])
    for name in ("c.csv", "p.parquet"):
        with pytest.raises(UserError, match=f"no field 'text' in {name}"):
            read([tmp_path / name])
    assert rows(read([tmp_path / "j.jsonl"], text_field="content")) == [("1", "x")]
    with pytest.raises(UserError, match="no field 'source' in j.jsonl"):
        read([tmp_path / "j.jsonl"], text_field="content", keep_columns=["source"])
    with pytest.raises(UserError, match="no field 'source' in p.parquet"):
        read([tmp_path / "p.parquet"], text_field="content", keep_columns=["source"])


def test_empty_files_give_no_chunk(tmp_path):
    for name in ("e.jsonl", "e.csv", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    assert read([tmp_path / n for n in ("e.jsonl", "e.csv", "e.txt", "blank.jsonl")]) == []


def test_truncated_gzip_keeps_what_was_read_and_quarantines_the_rest(tmp_path):
    docs = [{"id": str(i), "text": f"document number {i} " * 20} for i in range(20000)]
    full = gzip.compress(jsonl_bytes(docs))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    chunks = read([path], chunk_bytes=1 << 16)
    got = rows(chunks)
    assert 1000 < len(got) < len(docs)
    assert got == [(d["id"], d["text"]) for d in docs[: len(got)]]
    (fault,) = quarantined(chunks)
    assert fault["position"] == len(got) + 1
    assert fault["reason"].startswith("unreadable input:")
    assert sum(c.documents_in for c in chunks) == len(got) + 1
    assert sum(c.input_bytes for c in chunks) == path.stat().st_size
    with pytest.raises(UserError, match="unreadable input"):
        read([path], strict=True)


def test_a_file_that_cannot_be_opened_is_quarantined(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes(DOCS[:2]))
    (tmp_path / "gone.jsonl").write_bytes(jsonl_bytes(DOCS[2:3]))
    (tmp_path / "gone.txt").write_text("x")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    files = expand_inputs([str(tmp_path)])
    (tmp_path / "gone.jsonl").unlink()
    (tmp_path / "gone.txt").unlink()
    chunks = list(iter_chunks(files))
    assert rows(chunks) == [("d0", DOCS[0]["text"]), ("d1", DOCS[1]["text"])]
    bad = quarantined(chunks)
    assert [(q["source"], q["position"]) for q in bad] == [
        ("gone.jsonl", 1), ("gone.txt", 0), ("junk.parquet", 0)]
    assert all("unreadable input" in q["reason"] for q in bad)
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert [c.documents_in for c in chunks] == [2, 1, 1, 1]


def test_txt_files_are_packed_and_checked(tmp_path):
    for i in range(10):
        (tmp_path / f"{i}.txt").write_text(f"doc {i} " * 10)
    (tmp_path / "bad.txt").write_bytes(b"\xef\xbb\xbfnot \xff utf8")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfwith bom\r\n")
    chunks = read([tmp_path], chunk_bytes=200)
    assert [c.batch.num_rows for c in chunks] == [3, 3, 3, 2]  # 9.txt, bad.txt (quarantined), bom.txt
    assert rows(chunks)[-2:] == [("9.txt", "doc 9 " * 10), ("bom.txt", "with bom\r\n")]
    assert [(q["source"], q["reason"]) for q in quarantined(chunks)] == [("bad.txt", "invalid UTF-8")]
    assert sum(c.documents_in for c in chunks) == 12
    assert sum(c.input_bytes for c in chunks) == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_seq_is_gapless_across_formats(tmp_path):
    paths = write_all_formats(tmp_path, DOCS)
    chunks = read(list(paths.values()), chunk_bytes=50)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(isinstance(f, InputFile) for f in expand_inputs([str(tmp_path)]))


def corpus_reference(path: Path) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [(d["id"], d["text"]) for d in map(json.loads, fh)]


@pytest.mark.parametrize("name", ["en_common_licenses", "zh_fortunes"])
def test_real_corpus_files_read_exactly(name):
    path = CORPUS / f"{name}.jsonl.gz"
    if not path.exists():
        pytest.skip("shared corpus not present")
    chunks = read([path])
    assert rows(chunks) == corpus_reference(path)
    assert not quarantined(chunks)
    assert sum(c.input_bytes for c in chunks) == path.stat().st_size


@pytest.mark.slow
def test_whole_corpus_reads_exactly():
    if not CORPUS.exists():
        pytest.skip("shared corpus not present")
    for path in sorted(CORPUS.glob("*.jsonl.gz")):
        assert rows(read([path])) == corpus_reference(path), path.name


# ----- issue 10: over-long records, invalid UTF-8 anywhere, special files, any id type, row origins


def test_a_line_over_max_document_bytes_is_quarantined_without_being_held(tmp_path):
    """5 MB without a newline, a limit of 64 KiB: one quarantine record with the line, the size and the start of
    the record, the rows around it kept, and the reader never holds more than a few blocks (Python's own
    allocations, where the bytes read live, are traced)."""
    import tracemalloc

    path = tmp_path / "long.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"id": "a", "text": "before"}\n{"id": "long", "text": "')
        fh.write(b"z" * 5_000_000)
        fh.write(b'"}\n{"id": "b", "text": "after"}\n')
    (tmp_path / "warm.jsonl").write_text('{"text": "modules imported on first use are not counted"}\n')
    read([tmp_path / "warm.jsonl"])
    tracemalloc.start()
    try:
        chunks = read([path], chunk_bytes=1 << 16, max_document_bytes=1 << 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak
    assert rows(chunks) == [("a", "before"), ("b", "after")]
    (bad,) = quarantined(chunks)
    size = len(b'{"id": "long", "text": "') + 5_000_000 + 2
    assert bad == {"source": "long.jsonl", "position": 2, "file": "long.jsonl", "line": 2,
                   "reason": f"record of {size} bytes is longer than max_document_bytes (65536)",
                   "raw": '{"id": "long", "text": "' + "z" * (1000 - 24)}
    assert sum(c.documents_in for c in chunks) == 3
    assert sum(c.input_bytes for c in chunks) == path.stat().st_size


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.csv", "d.parquet", "saved", "txt"])
def test_records_over_max_document_bytes_in_every_format(tmp_path, name):
    """Short and long records mixed in blocks larger than the limit: each long one is quarantined at its own line
    or row, and the rest is read as usual."""
    docs = [{"id": f"d{i}", "text": ("long " * 60 if i % 3 == 1 else f"short {i}")} for i in range(10)]
    path = write_all_formats(tmp_path, docs)[name]
    chunks = read([path], max_document_bytes=200)
    assert rows(chunks) == [(d["id"] if name != "txt" else f"{d['id']}.txt", d["text"]) for d in docs
                            if len(d["text"]) <= 200]
    bad = quarantined(chunks)
    first = {"d.jsonl": 1, "d.jsonl.gz": 1, "d.csv": 1}.get(name, 0)
    want = [i + first for i in (1, 4, 7)] if name != "txt" else [0, 0, 0]
    assert [q["position"] for q in bad] == want
    assert [q["file"] for q in bad] == [f"d{i}.txt" for i in (1, 4, 7)] if name == "txt" else [path.name] * 3
    assert all("longer than max_document_bytes (200)" in q["reason"] for q in bad)
    assert all(q["raw"].startswith(("long", '{"id": "d', "d")) for q in bad)
    assert sum(c.documents_in for c in chunks) == 10
    no_newline = tmp_path / "end.jsonl"
    no_newline.write_bytes(b'{"text": "ok"}\n{"text": "' + b"x" * 300 + b'"}')
    (bad,) = quarantined(read([no_newline], chunk_bytes=64, max_document_bytes=100))
    assert (bad["line"], bad["reason"]) == (2, "record of 312 bytes is longer than max_document_bytes (100)")


def test_invalid_utf8_inside_a_valid_json_line_is_quarantined(tmp_path):
    """Raw 0xff 0xfe inside a JSON string of an otherwise valid block: pyarrow's JSON reader takes it, so the
    block is checked; the one line is quarantined and its neighbours kept."""
    path = tmp_path / "u.jsonl"
    lines = [b'{"id": "a", "text": "good one"}', b'{"id": "b", "text": "bad \xff\xfe here"}',
             b'{"id": "c", "text": "good two", "tag": "x"}', b'{"id": "d", "text": "ok", "tag": "bad \xfe"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    chunks = read([path], keep_columns=["tag"])
    assert rows(chunks) == [("a", "good one"), ("c", "good two")]
    assert [(q["line"], q["reason"]) for q in quarantined(chunks)] == [(2, "invalid UTF-8"), (4, "invalid UTF-8")]
    for c in chunks:
        c.batch.validate(full=True)


def test_invalid_utf8_in_any_string_column_of_parquet_csv_and_datasets(tmp_path):
    import datasets

    def invalid(values: list[bytes]) -> pa.Array:
        return pa.array(values, pa.binary()).view(pa.string())

    table = pa.table({"id": invalid([b"a", b"b\xff", b"c", b"d", b"e"]),
                      "text": invalid([b"one", b"two", b"th\xferee", b"four", b"five"]),
                      "tag": invalid([b"x", b"y", b"z", b"\xc3", b"w"]),
                      "big": pa.array(["1", "2", "3", "4", "5"], pa.large_string())})
    pq.write_table(table, tmp_path / "p.parquet")
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "c.csv").write_bytes(b"id,text,tag\na,one,x\nb\xff,two,y\nc,th\xferee,z\nd,four,\xc3\ne,five,w\n")
    for name, first in (("p.parquet", 0), ("saved", 0), ("c.csv", 1)):
        chunks = read([tmp_path / name], keep_columns=["tag"])
        assert rows(chunks) == [("a", "one"), ("e", "five")], name
        got = [(q["row"], q["reason"]) for q in quarantined(chunks)]
        assert got == [(1 + first, "invalid UTF-8 in 'id'"), (2 + first, "invalid UTF-8 in 'text'"),
                       (3 + first, "invalid UTF-8 in 'tag'")], name
        for c in chunks:
            c.batch.validate(full=True)


def test_any_parquet_id_type_becomes_text(tmp_path):
    ids = pa.array([[1, 2], None, [3]], pa.list_(pa.int64()))
    pq.write_table(pa.table({"id": ids, "text": ["a", "b", "c"]}), tmp_path / "l.parquet")
    pq.write_table(pa.table({"id": pa.array([{"k": 1}, {"k": 2}]), "text": ["a", "b"]}), tmp_path / "s.parquet")
    assert rows(read([tmp_path / "l.parquet"])) == [("[1, 2]", "a"), ("l.parquet:1", "b"), ("[3]", "c")]
    assert rows(read([tmp_path / "s.parquet"])) == [('{"k": 1}', "a"), ('{"k": 2}', "b")]


def test_special_files_and_broken_links_are_refused_naming_them(tmp_path):
    import os

    good = tmp_path / "in" / "good.jsonl"
    good.parent.mkdir()
    good.write_text('{"text": "x"}\n')
    cases = {"fifo.jsonl": "a FIFO (named pipe), not a regular file", "zero.jsonl": "a character device",
             "dangling.jsonl": "No such file or directory (a broken symbolic link)",
             "loop.jsonl": "Too many levels of symbolic links"}
    for name, message in cases.items():
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        link = d / name
        if name == "fifo.jsonl":
            os.mkfifo(link)
        elif name == "zero.jsonl":
            link.symlink_to("/dev/zero")
        elif name == "dangling.jsonl":
            link.symlink_to(d / "gone.jsonl")
        else:
            link.symlink_to(link)
        for arg in ([d], [link]) if name in ("fifo.jsonl", "zero.jsonl") else ([d],):
            with pytest.raises(UserError, match=re.escape(f"{link}") + ".*" + re.escape(message)):
                expand_inputs([str(a) for a in arg])


def test_chunks_carry_each_rows_origin(tmp_path):
    (tmp_path / "j.jsonl").write_text('{"text": "a"}\n\n{"text": "b"}\n{bad\n{"text": "c"}\n')
    pq.write_table(pa.table({"text": ["x", None, "y"]}), tmp_path / "p.parquet")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "1.txt").write_text("one")
    (tmp_path / "t" / "2.txt").write_text("two")
    for path, unit, want in (("j.jsonl", "line", [("j.jsonl", 1), ("j.jsonl", 3), ("j.jsonl", 5)]),
                             ("p.parquet", "row", [("p.parquet", 0), ("p.parquet", 2)]),
                             ("t", "row", [("1.txt", 0), ("2.txt", 0)])):
        got = [c.origins.of(i) for c in read([tmp_path / path], chunk_bytes=1) for i in range(c.batch.num_rows)]
        assert got == [(f, unit, p) for f, p in want], path


@pytest.mark.parametrize("field_lines", [50, 50_000])
def test_a_csv_row_over_the_limit_ends_where_its_quotes_close(tmp_path, field_lines):
    """Newlines inside a quoted field are part of the row, also while an over-long row is skipped: in one block
    (50 lines) or read past in pieces (50,000 lines, larger than a block and the limit)."""
    path = tmp_path / "q.csv"
    long_field = '"' + 'say ""hi""\n' * field_lines + '"'
    path.write_text(f"id,text\na,first\nb,{long_field}\nc,\"quoted\nnewline\"\nd,last\n")
    chunks = read([path], chunk_bytes=1 << 16, max_document_bytes=200)
    assert rows(chunks) == [("a", "first"), ("c", "quoted\nnewline"), ("d", "last")]
    (bad,) = quarantined(chunks)
    assert (bad["row"], bad["raw"][:11]) == (2, 'b,"say ""hi')
    assert bad["reason"] == f"record of {len(long_field) + 2} bytes is longer than max_document_bytes (200)"


def _messy_inputs(tmp_path: Path) -> list[Path]:
    """JSON Lines and CSV with bad records, blank lines and (CSV) quoted newlines spread over many chunks."""
    lines = []
    for i in range(400):
        lines.append(json.dumps({"id": f"j{i}", "text": f"doc {i} " + "é" * (i % 23), "n": i}).encode())
        if i % 37 == 5:
            lines.append(b"{not json")
        if i % 53 == 7:
            lines += [b"", b"   "]
        if i % 61 == 9:
            lines.append(b'{"id": "bad-utf8", "text": "\xff\xfe"}')
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    rows = [["id", "text"]]
    for i in range(300):
        rows.append([f"c{i}", f"row {i}\nsecond line, \"quoted\"" if i % 7 == 0 else f"row {i}"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for k, row in enumerate(rows):
        writer.writerow(row)
        if k % 41 == 3:
            buffer.write("\r\n")  # an empty record: not numbered
        if k % 59 == 4:
            buffer.write("only,three,fields\r\n")
    table = tmp_path / "m.csv"
    table.write_text(buffer.getvalue(), encoding="utf-8")
    return [jsonl, table]


def test_raw_chunks_parse_to_the_rows_the_source_gives(tmp_path):
    """The coordinator cuts JSON Lines and CSV without parsing; a worker parsing each raw chunk must get exactly
    the rows, bad records and positions that parsing in the Source gives."""
    from prep.io.pieces import parse_chunk
    from prep.io.records import ReadOptions

    paths = _messy_inputs(tmp_path)
    raw = read(paths, chunk_bytes=2000, raw=True)
    parsed = read(paths, chunk_bytes=2000)
    assert len(raw) == len(parsed) > 10
    assert all(c.raw is not None and c.batch.schema.names == ["data"] for c in raw)  # not parsed by the Source
    opts = ReadOptions("text", "id", (), 2000, False, 1 << 26)
    for r, p in zip(raw, parsed, strict=True):
        again = parse_chunk(r, opts)
        assert again.batch.equals(p.batch)
        assert again.quarantine == p.quarantine
        assert list(again.origins.positions) == list(p.origins.positions)
    # independent check: every good JSON line is a row, in order, at its 1-based line number
    lines = paths[0].read_bytes().split(b"\n")
    expected = [(json.loads(line)["id"], n) for n, line in enumerate(lines, 1)
                if line.startswith(b'{"id": "j')]
    got = [(row["id"], int(pos)) for c in parsed if c.source == "m.jsonl"
           for row, pos in zip(c.batch.to_pylist(), c.origins.positions, strict=True)]
    assert got == expected
    bad = [q for c in parsed if c.source == "m.jsonl" for q in c.quarantine]
    assert [q["line"] for q in bad] == [n for n, line in enumerate(lines, 1)
                                        if line in (b"{not json", b'{"id": "bad-utf8", "text": "\xff\xfe"}')]
    # CSV: data rows numbered without the empty records; the 3-field rows quarantined at their number
    csv_rows = [(row["id"], int(pos)) for c in parsed if c.source == "m.csv"
                for row, pos in zip(c.batch.to_pylist(), c.origins.positions, strict=True)]
    assert [r for r, _ in csv_rows] == [f"c{i}" for i in range(300)]
    numbers = [p for _, p in csv_rows] + [q["row"] for c in parsed if c.source == "m.csv" for q in c.quarantine]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))


def test_a_raw_chunk_parsed_in_parts_gives_the_whole_chunks_rows(tmp_path):
    """Retries and bisection compute a raw chunk's records in parts: the parts must add up to the whole."""
    from prep.io.records import ReadOptions, parse_raw, raw_data

    opts = ReadOptions("text", "id", (), 4000, False, 1 << 26)
    for chunk in read(_messy_inputs(tmp_path), chunk_bytes=4000, raw=True):
        data, n = raw_data(chunk.batch), chunk.raw.units
        whole = parse_raw(data, chunk.raw, opts)
        for cut in (1, n // 3, n - 1):
            a, b = parse_raw(data, chunk.raw, opts, 0, cut), parse_raw(data, chunk.raw, opts, cut, n)
            assert pa.concat_tables([pa.table(a.batch), pa.table(b.batch)]).equals(pa.table(whole.batch))
            assert a.quarantine + b.quarantine == whole.quarantine
            assert a.documents_in + b.documents_in == whole.documents_in
            assert list(a.origins.positions) + list(b.origins.positions) == list(whole.origins.positions)


# ------------------------------------------------------------------------ pieces: Parquet, datasets, .txt


def _piece_table(n: int = 240) -> pa.Table:
    """Rows of uneven size, a kept column and integer ids; row 100 is 40 times the others."""
    texts = [("ü" * (i % 13) + f" doc {i} ") * (40 if i == 100 else 1 + i % 5) for i in range(n)]
    return pa.table({"id": pa.array(range(n), pa.int64()), "text": texts, "tag": [f"t{i % 3}" for i in range(n)]})


def _expected_rows(table: pa.Table) -> list[tuple[str, str, str]]:
    return [(str(r["id"]), r["text"], r["tag"]) for r in table.to_pylist()]


@pytest.mark.parametrize("chunk_bytes", [1, 300, 5000, 1 << 20])
def test_parquet_and_dataset_pieces_give_the_files_rows(tmp_path, chunk_bytes):
    """Row groups packed or cut into row ranges, Arrow files cut by their offsets: the rows workers read are the
    files' rows, in order (read here with pyarrow alone), at their 0-based row index."""
    import datasets

    table = _piece_table()
    pq.write_table(table.slice(0, 150), tmp_path / "a.parquet", row_group_size=9)
    pq.write_table(table.slice(150), tmp_path / "b.parquet", row_group_size=60)  # groups larger than a chunk
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"), num_shards=3)
    expected = {"a.parquet": pq.read_table(tmp_path / "a.parquet"), "b.parquet": pq.read_table(tmp_path / "b.parquet"),
                "saved": datasets.load_from_disk(str(tmp_path / "saved")).data.table}
    for name, want in expected.items():
        chunks = read([tmp_path / name], chunk_bytes=chunk_bytes, keep_columns=["tag"])
        assert [(r["id"], r["text"], r["tag"]) for c in chunks for r in c.batch.to_pylist()] == _expected_rows(want)
        assert [int(p) for c in chunks for p in c.origins.positions] == list(range(want.num_rows)), name
        assert sum(c.input_bytes for c in chunks) == total_input_bytes(expand_inputs([str(tmp_path / name)]))
        if chunk_bytes == 1:
            assert len(chunks) == want.num_rows, name  # every row a piece of its own
        if chunk_bytes == 1 << 20:  # one piece per file (a dataset's chunks never span two of its Arrow files)
            assert len(chunks) == (3 if name == "saved" else 1), name


def test_a_piece_read_in_parts_gives_the_whole_pieces_rows(tmp_path):
    """Retries and bisection read a piece's units in parts: rows (Parquet, datasets) or files (.txt)."""
    import datasets

    from prep.io.pieces import read_raw
    from prep.io.records import ReadOptions

    table = _piece_table(60)
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=7)
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"), num_shards=2)
    (tmp_path / "t").mkdir()
    for i in range(9):
        (tmp_path / "t" / f"{i}.txt").write_bytes(b"\xff bad" if i == 4 else f"text {i}".encode())
    opts = ReadOptions("text", "id", (), 1000, False, 1 << 26)
    pieces = read([tmp_path / n for n in ("p.parquet", "saved", "t")], chunk_bytes=1000, raw=True)
    assert {c.raw.format for c in pieces} == {"parquet", "hf_dataset", "txt"}
    for chunk in pieces:
        whole, n = read_raw(chunk.batch, chunk.raw, opts), chunk.raw.units
        for cut in (1, n // 3, n - 1):
            a, b = read_raw(chunk.batch, chunk.raw, opts, 0, cut), read_raw(chunk.batch, chunk.raw, opts, cut, n)
            assert pa.concat_tables([pa.table(a.batch), pa.table(b.batch)]).equals(pa.table(whole.batch))
            assert a.quarantine + b.quarantine == whole.quarantine
            assert a.documents_in + b.documents_in == whole.documents_in
            assert list(a.origins.positions) + list(b.origins.positions) == list(whole.origins.positions)


def test_the_coordinator_decodes_no_parquet_and_reads_no_text(tmp_path, monkeypatch):
    """Cutting reads a Parquet footer (and hashes stored pages for --resume), the offsets of a dataset's text
    column, and the sizes of .txt files: every read of rows fails here, yet the chunks come, with no rows."""
    import datasets

    import prep.io.pieces

    table = _piece_table()
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=50)
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "t").mkdir()
    for i in range(5):
        (tmp_path / "t" / f"{i}.txt").write_text(f"text {i}")

    def refuse(*args, **kwargs):
        raise AssertionError("the coordinator read rows")

    for owner, name in ((pq.ParquetFile, "iter_batches"), (pq.ParquetFile, "read_row_groups"),
                        (pq.ParquetFile, "read_row_group"), (pq.ParquetFile, "read"), (pq, "read_table"),
                        (prep.io.pieces, "open_input")):
        monkeypatch.setattr(owner, name, refuse)
    chunks = read([tmp_path / n for n in ("p.parquet", "saved", "t")], chunk_bytes=2000, raw=True)
    by_format = {f: [c for c in chunks if c.raw.format == f] for f in ("parquet", "hf_dataset", "txt")}
    for fmt in ("parquet", "hf_dataset"):
        assert sum(c.units for c in by_format[fmt]) == table.num_rows
        assert all(c.batch.schema.names == ["data"] and c.batch.num_rows == 1 for c in by_format[fmt])
    assert [r["display"] for c in by_format["txt"] for r in c.batch.to_pylist()] == [f"{i}.txt" for i in range(5)]
    assert len(by_format["parquet"]) > 5


@pytest.mark.parametrize("name", ["p.parquet", "saved"])
def test_bad_parquet_and_dataset_rows_are_quarantined_at_their_row(tmp_path, name):
    """Null texts, texts over max_document_bytes and invalid UTF-8, found by the worker, at their exact 0-based
    row across row groups or Arrow files; --strict names file and row."""
    import datasets

    n = 90
    texts = [f"text {i}".encode() for i in range(n)]
    bad = {7: None, 23: b"long " * 100, 41: b"bad \xff utf8", 64: None, 88: b"\xc3"}
    for i, value in bad.items():
        texts[i] = value
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": pa.array(texts, pa.binary()).view(pa.string())})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=10)
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"), num_shards=3)
    chunks = read([tmp_path / name], chunk_bytes=100, max_document_bytes=200)
    assert rows(chunks) == [(f"r{i}", f"text {i}") for i in range(n) if i not in bad]
    reasons = {i: "null 'text'" if v is None else "invalid UTF-8 in 'text'" for i, v in bad.items()}
    reasons[23] = "text of 500 bytes is longer than max_document_bytes (200)"
    assert [(q["row"], q["reason"]) for q in quarantined(chunks)] == sorted(reasons.items())
    assert {q["file"] for q in quarantined(chunks)} == {name}
    assert sum(c.documents_in for c in chunks) == n
    with pytest.raises(UserError, match=re.escape(f"{name}, row 7: null 'text' (strict mode)")):
        read([tmp_path / name], chunk_bytes=100, strict=True)


def test_ranges_of_a_large_row_group_are_read_on_from_where_the_last_read_stopped(tmp_path, monkeypatch):
    """Parquet cannot seek to a row: a worker given a large group's ranges in order decodes the group once,
    and starts again only for a range behind it (a retry), with the same rows."""
    from prep.io.pieces import read_raw
    from prep.io.records import ReadOptions

    table = _piece_table()
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=table.num_rows)
    starts = []
    real = pq.ParquetFile.iter_batches

    def counted(self, *args, **kwargs):
        starts.append(kwargs.get("row_groups"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted)
    pieces = read([tmp_path / "big.parquet"], chunk_bytes=500, raw=True)
    assert len(pieces) > 10 and not starts
    opts = ReadOptions("text", "id", (), 500, False, 1 << 26)
    got = [read_raw(c.batch, c.raw, opts) for c in pieces[::2]]  # every other range, as one of two workers
    assert len(starts) == 1
    again = read_raw(pieces[0].batch, pieces[0].raw, opts)
    assert len(starts) == 2 and again.batch.equals(got[0].batch)
    rows = [r["id"] for c in pieces[::2] for r in read_raw(c.batch, c.raw, opts).batch.to_pylist()]
    assert rows == [r["id"] for p in got for r in p.batch.to_pylist()]
    assert rows == [str(i) for c in pieces[::2] for i in range(c.raw.first, c.raw.first + c.raw.units)]


def test_the_coordinators_allocator_setting_stops_refaulting_freed_mib_buffers(tmp_path: Path):
    """Cutting input allocates and frees MiB-sized buffers, which glibc by default maps afresh and faults in again
    page by page. With `reuse_freed_buffers` the same cut is served from memory already faulted in."""
    import subprocess

    path = tmp_path / "in.jsonl"
    line = json.dumps({"id": "x", "text": "a few words of text, " * 40}) + "\n"
    path.write_text(line * (12 * 2**20 // len(line)), encoding="utf-8")
    code = f"""
import resource, sys
from prep.core.allocator import reuse_freed_buffers
from prep.io.sources import expand_inputs, iter_chunks
if sys.argv[1] == "on":
    assert reuse_freed_buffers()
files = expand_inputs([{str(path)!r}])
def cut():
    return sum(c.batch.nbytes for c in iter_chunks(files, chunk_bytes=1 << 20, raw=True))
cut()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cut()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    off, on = (int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                  check=True).stdout) for mode in ("off", "on"))
    assert on * 4 < off, (off, on)
