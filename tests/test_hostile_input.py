"""Hostile input: every bad thing a corpus can hold ends in rows, in `_quarantine.jsonl` with a reason, or in a
clear exit-2 error, never in a traceback, a hang or a silent drop.

The tests build their corpora themselves and know, line by line, where each record must end; they check that
per input file (`documents_in = rows + quarantined + filtered`) and for the whole run (the manifest's counts).
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SAMPLE_TOKENIZER, as_if_not_root, corpus_docs, shard_bytes_of
from tokenizers import Tokenizer

BASE = ("--tokenizer", str(SAMPLE_TOKENIZER), "--backend", "tokenizers", "--workers", "2", "--no-progress")
ROW, QUARANTINED, FILTERED = "row", "quarantined", "filtered"


def prep_run(inputs: Path, out: Path, *extra: str, permissions: bool = False, base: tuple = BASE,
             timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    prefix = as_if_not_root() if permissions else []
    cmd = [*prefix, sys.executable, "-m", "prep", "run", "--input", str(inputs), "--output", str(out), *base, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


class Expect:
    """What must become of each record of each file: a row with this id, a quarantine record at this position
    whose reason contains this text, or a filtered document."""

    def __init__(self) -> None:
        self.files: dict[str, list[tuple]] = collections.defaultdict(list)

    def row(self, source: str, doc_id: str) -> None:
        self.files[source].append((ROW, doc_id))

    def quarantined(self, source: str, position: int, reason: str) -> None:
        self.files[source].append((QUARANTINED, position, reason))

    def filtered(self, source: str) -> None:
        self.files[source].append((FILTERED,))

    def check(self, out: Path) -> dict:
        """Compare the run's rows, quarantine and counts with the expectation, file by file."""
        manifest = json.loads((out / "_manifest.json").read_text())
        counts = manifest["counts"]
        rows = pq.read_table(out, columns=["id"]).column("id").to_pylist() if manifest["shards"] else []
        qpath = out / "_quarantine.jsonl"
        quarantine = [json.loads(line) for line in qpath.read_text().splitlines()] if qpath.exists() else []
        assert collections.Counter(rows) == collections.Counter(
            e[1] for records in self.files.values() for e in records if e[0] == ROW)
        for source, records in self.files.items():
            got = [(q["position"], q["reason"]) for q in quarantine if q["source"] == source]
            want = [(e[1], e[2]) for e in records if e[0] == QUARANTINED]
            assert [p for p, _ in got] == [p for p, _ in want], source
            for (_, reason), (_, part) in zip(got, want, strict=True):
                assert part in reason, (source, reason, part)
            n_rows = sum(1 for e in records if e[0] == ROW)
            n_filtered = sum(1 for e in records if e[0] == FILTERED)
            assert len(records) == n_rows + len(got) + n_filtered, source  # the identity, for this file
        assert {q["source"] for q in quarantine} <= set(self.files)
        assert all(q["reason"] and "raw" in q for q in quarantine)
        documents = sum(len(records) for records in self.files.values())
        assert counts["documents_in"] == documents
        assert counts["documents_out"] == len(rows)
        assert counts["quarantined"] == len(quarantine)
        assert counts["filtered"] == sum(1 for r in self.files.values() for e in r if e[0] == FILTERED)
        assert counts["documents_in"] == counts["documents_out"] + counts["quarantined"] + counts["filtered"]
        return counts


MIXED = [  # (line, outcome, id or reason) of a JSON Lines file with a BOM and CRLF line ends
    (b'{"id": "m1", "text": "a good document"}', ROW, "m1"),
    (b'{"id": "m2", "text": "unterminated', QUARANTINED, "malformed JSON"),
    (b'{"id": "m3", "text": "bad \xff\xfe utf8"}', QUARANTINED, "invalid UTF-8"),
    (b'{"id": "m4", "text": "lone \\ud800 surrogate"}', QUARANTINED, "lone surrogate"),
    (b'{"id": "m5", "text": "escaped NUL \\u0000 inside"}', ROW, "m5"),
    (b'{"id": "m6", "text": "raw NUL \x00 inside"}', QUARANTINED, "malformed JSON"),
    (b'{"id": "m7"}', QUARANTINED, "no field 'text'"),
    (b'{"id": "m8", "text": null}', QUARANTINED, "null 'text'"),
    (b'{"id": "m9", "text": 42}', QUARANTINED, "'text' is a number"),
    (b'{"id": "m10", "text": ["a", "b"]}', QUARANTINED, "'text' is an array"),
    (b'"just a string"', QUARANTINED, "not a JSON object"),
    (b'{"id": "m12", "text": ""}', FILTERED, None),
    (b'{"id": "m13", "text": "  \\t\\n\\r "}', FILTERED, None),
    (b'{"id": "m1", "text": "a duplicate id is a row of its own"}', ROW, "m1"),
    (b'{"text": "no id: one is made of file and line"}', ROW, "mixed.jsonl:15"),
    (b'{"id": null, "text": "null id"}', ROW, "mixed.jsonl:16"),
    (b'{"id": 17, "text": "numeric id"}', ROW, "17"),
    (b'{"id": "m18", "text": "a pair \\ud83d\\ude00 is fine"}', ROW, "m18"),
    (b"[" * 100_000 + b"]" * 100_000, QUARANTINED, "malformed JSON"),
    (b"", None, None),  # blank lines are no records
    (b"   \t", None, None),
    (b'{"id": "m22", "text": "the last one, after blank lines"}', ROW, "m22"),
]


def build_hostile_corpus(root: Path, expect: Expect) -> Path:
    """One directory holding the issue's list of bad inputs (and a few good documents)."""
    root.mkdir(parents=True)
    (root / "mixed.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(line for line, _, _ in MIXED) + b"\r\n")
    for number, (_, outcome, value) in enumerate(MIXED, start=1):
        if outcome == ROW:
            expect.row("mixed.jsonl", value)
        elif outcome == QUARANTINED:
            expect.quarantined("mixed.jsonl", number, value)
        elif outcome == FILTERED:
            expect.filtered("mixed.jsonl")

    (root / "empty.jsonl").write_bytes(b"")

    docs = [{"id": f"t{i}", "text": f"document {i}: " + "some words to fill the line " * 20} for i in range(4000)]
    packed = gzip.compress("".join(json.dumps(d) + "\n" for d in docs).encode(), mtime=0)
    (root / "truncated.jsonl.gz").write_bytes(packed[: len(packed) * 3 // 5])

    rng = random.Random(4)
    noise = bytes(rng.randrange(256) for _ in range(20_000))
    (root / "noise.jsonl").write_bytes(noise)
    blank = set(b" \t\r")
    for number, line in enumerate(noise.split(b"\n"), start=1):
        if set(line) - blank:
            expect.quarantined("noise.jsonl", number, "")

    texts = root / "texts"
    texts.mkdir()
    (texts / "a.txt").write_bytes(b"\xef\xbb\xbfa text file\r\nwith a NUL \x00 and CRLF\r\n")
    (texts / "b.txt").write_bytes(b"")  # an empty file is no document
    (texts / "c.txt").write_bytes(b"  \n\t ")
    (texts / "d.txt").write_bytes(b"invalid \xff UTF-8")
    expect.row("texts/a.txt", "texts/a.txt")
    expect.filtered("texts/c.txt")
    expect.quarantined("texts/d.txt", 0, "invalid UTF-8")
    return root


def truncated_prefix(out: Path, expect: Expect) -> int:
    """The truncated .gz: its rows must be its first k documents, then one record for the unreadable rest."""
    rows = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    got = sorted(int(r[1:]) for r in rows if r.startswith("t") and r[1:].isdigit())
    k = len(got)
    assert got == list(range(k)) and 0 < k < 4000
    for i in range(k):
        expect.row("truncated.jsonl.gz", f"t{i}")
    expect.quarantined("truncated.jsonl.gz", k + 1, "unreadable input")
    return k


def test_hostile_corpus_accounted_per_file(tmp_path):
    expect = Expect()
    corpus = build_hostile_corpus(tmp_path / "in", expect)
    secret = corpus / "secret.jsonl"
    secret.write_text('{"id": "s1", "text": "nobody may read this"}\n')
    secret.chmod(0)
    expect.quarantined("secret.jsonl", 1, "Permission denied")
    out = tmp_path / "out"
    proc = prep_run(corpus, out, "--chunk-bytes", "16KiB", permissions=True)
    assert proc.returncode == 0, proc.stderr
    truncated_prefix(out, expect)
    counts = expect.check(out)
    assert counts["quarantined"] > 90 and counts["filtered"] == 3
    text = pq.read_table(out, columns=["id", "num_bytes"]).to_pylist()
    assert {"id": "m5", "num_bytes": len("escaped NUL \x00 inside")} in text  # the NUL is kept, as text


def test_strict_names_file_and_line_of_the_first_bad_record(tmp_path):
    corpus = build_hostile_corpus(tmp_path / "in", Expect())
    proc = prep_run(corpus / "mixed.jsonl", tmp_path / "out", "--strict")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("prep: error: mixed.jsonl, line 2: malformed JSON")
    proc = prep_run(corpus / "texts", tmp_path / "out2", "--strict")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "prep: error: d.txt, file 0: invalid UTF-8 (strict mode)"


def test_unreadable_directory_and_file_are_clear(tmp_path):
    corpus = tmp_path / "in"
    (corpus / "locked").mkdir(parents=True)
    (corpus / "ok.jsonl").write_text('{"id": "a", "text": "fine"}\n')
    (corpus / "locked" / "x.jsonl").write_text('{"id": "b", "text": "behind a locked door"}\n')
    (corpus / "locked").chmod(0)
    try:
        proc = prep_run(corpus, tmp_path / "out", permissions=True)
    finally:
        (corpus / "locked").chmod(0o755)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"prep: error: cannot read directory {corpus / 'locked'}: " \
                                                   "Permission denied"
    (corpus / "ok.jsonl").chmod(0)
    proc = prep_run(corpus / "ok.jsonl", tmp_path / "out2", "--strict", permissions=True)
    assert proc.returncode == 2 and "ok.jsonl, line 1: unreadable input" in proc.stderr


def test_only_bad_records_and_only_empty_files(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "all_bad.jsonl").write_bytes(b"{nope\n" * 500)
    out = tmp_path / "out"
    assert prep_run(bad, out).returncode == 0
    expect = Expect()
    for line in range(1, 501):
        expect.quarantined("all_bad.jsonl", line, "malformed JSON")
    expect.check(out)
    assert not list(out.glob("part-*.parquet"))

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.jsonl").write_bytes(b"")
    (empty / "b.txt").write_bytes(b"")
    proc = prep_run(empty, tmp_path / "out2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out2" / "_manifest.json").read_text())["counts"]["documents_in"] == 0


def huge_document(size: int) -> str:
    base = "\n".join(d["text"] for d in corpus_docs("en_fortunes", 2000))
    return (base * (size // len(base) + 1))[:size]


def check_huge(tmp_path: Path, size: int, tokenizer: Path, *extra: str) -> None:
    """Three documents, the middle one `size` bytes: all three rows, every token id where it belongs."""
    text = huge_document(size)
    corpus = tmp_path / "in"
    corpus.mkdir()
    with open(corpus / "huge.jsonl", "w", encoding="utf-8") as f:
        for doc in ({"id": "before", "text": "a small one before"}, {"id": "huge", "text": text},
                    {"id": "after", "text": "a small one after"}):
            f.write(json.dumps(doc) + "\n")
    out = tmp_path / "out"
    proc = prep_run(corpus, out, "--tokenizer", str(tokenizer), "--features", "num_bytes,num_chars", *extra,
                    timeout=600)
    assert proc.returncode == 0, proc.stderr
    expect = Expect()
    for doc_id in ("before", "huge", "after"):
        expect.row("huge.jsonl", doc_id)
    expect.check(out)
    table = pq.read_table(out).to_pylist()
    huge = next(r for r in table if r["id"] == "huge")
    assert huge["num_bytes"] == len(text.encode()) and huge["num_chars"] == len(text)
    vocab = json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"]
    assert huge["input_ids"] == [vocab.get(word, 0) for word in text.split()]  # word level: an independent check
    from prep.engines.local.coordinator import SHM_RECORD

    assert not (out / SHM_RECORD).exists()  # removed after the segments it names


@pytest.fixture
def word_tokenizer(tmp_path) -> Path:
    """A whitespace word-level tokenizer ([UNK] = 0): about 10x faster than BPE, so that 100 MB tokenize in
    seconds, and its ids are easy to compute without it."""
    vocab = {"[UNK]": 0, **{w: i for i, w in enumerate(["the", "a", "of", "to", "and", "is", "in"], start=1)}}
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}}  # as tokenizers 0.2x saves it
    path = tmp_path / "words.tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")  # JSON, not the 0.2x builders: 1.x has none
    return path


def test_document_larger_than_a_chunk_and_a_slot(tmp_path, word_tokenizer):
    """5 MB in one document with 64 KiB chunks: the input slot is 384 KiB and the output slot 1.4 MiB, so both
    ways go through segments of their own."""
    check_huge(tmp_path, 5_000_000, word_tokenizer, "--chunk-bytes", "64KiB")


@pytest.mark.slow
def test_a_100_mb_document(tmp_path, word_tokenizer):
    """Larger than a chunk (1 MiB), an input slot (2.25 MiB), an output slot (7 MiB) and a Parquet row group (and
    than the default --max-document-bytes, raised here)."""
    check_huge(tmp_path, 100_000_000, word_tokenizer, "--max-document-bytes", "128MiB")


@pytest.mark.slow
def test_a_million_tiny_documents(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    with open(corpus / "tiny.jsonl", "w") as f:
        f.write("".join(f'{{"id":"{i}","text":"w{i % 97}"}}\n' for i in range(1_000_000)))
    out = tmp_path / "out"
    proc = prep_run(corpus, out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ids = pq.read_table(out, columns=["id"]).column("id").to_numpy(zero_copy_only=False)
    assert len(ids) == 1_000_000 and (ids.astype(int) == range(1_000_000)).all()
    counts = json.loads((out / "_manifest.json").read_text())["counts"]
    assert counts["documents_in"] == counts["documents_out"] == 1_000_000


def test_invalid_utf8_inside_a_json_string_is_quarantined_not_a_crash(tmp_path):
    """Raw 0xff 0xfe inside a string of an otherwise valid line: pyarrow's JSON reader accepts the block, and the
    run used to end in a UnicodeDecodeError traceback in the coordinator."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    lines = [json.dumps({"id": f"u{i}", "text": f"document number {i}"}).encode() for i in range(40)]
    lines[17] = b'{"id": "u17", "text": "bad \xff\xfe bytes"}'
    (corpus / "u.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    proc = prep_run(corpus, out)
    assert proc.returncode == 0, proc.stderr
    expect = Expect()
    for i in range(40):
        expect.quarantined("u.jsonl", 18, "invalid UTF-8") if i == 17 else expect.row("u.jsonl", f"u{i}")
    expect.check(out)
    (record,) = [json.loads(line) for line in (out / "_quarantine.jsonl").read_text().splitlines()]
    assert (record["file"], record["line"]) == ("u.jsonl", 18)


def test_fifo_and_broken_links_are_refused_at_once_in_one_line(tmp_path):
    """A FIFO named .jsonl with no writer used to block the run beyond the reach of SIGINT and SIGTERM; a link to
    itself ended in a traceback. Both are refused before anything starts, naming the file."""
    for name in ("fifo", "loop"):
        corpus = tmp_path / name
        corpus.mkdir()
        (corpus / "good.jsonl").write_text('{"text": "fine"}\n')
        special = corpus / "x.jsonl"
        if name == "fifo":
            os.mkfifo(special)
            why = "is a FIFO (named pipe), not a regular file; prep reads regular files only"
        else:
            special.symlink_to(special)
            why = ": Too many levels of symbolic links"
        proc = prep_run(corpus, tmp_path / f"out-{name}", timeout=60)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("prep: error: ") and str(special) in line and why in line, line


def test_every_quarantine_record_names_file_and_line_or_row_in_input_order(tmp_path):
    """Bad records found by the Source and poison documents found by the engine (a worker that raises on them),
    in one chunk: all in `_quarantine.jsonl` with file and line or row, in input order, also where ids repeat;
    --max-document-bytes from a pipeline file or a flag; the same bytes with one worker or two."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    lines = [b'{"id": "dup", "text": "first good one"}', b"{malformed", b'{"id": "dup", "text": "POISON here"}',
             b'{"id": "dup", "text": "' + b"long " * 300 + b'"}', b'{"id": "x", "text": "bad \xff utf8"}',
             b'{"id": "dup", "text": "POISON again"}', b'{"id": "y", "text": "the last good one"}']
    (corpus / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    pq.write_table(pa.table({"id": ["p0", "p1", "p2"], "text": ["fine", "a POISON row", "fine too"]}),
                   corpus / "b.parquet")
    (tmp_path / "p.toml").write_text('[input]\nmax_document_bytes = "1KiB"\n')
    env = {"PREP_DEBUG_FAULT": "raise:POISON"}
    base = BASE[:4] + ("--no-progress",)
    one = prep_run(corpus, tmp_path / "one", str(tmp_path / "p.toml"), "--workers", "1", base=base, env=env)
    two = prep_run(corpus, tmp_path / "two", "--workers", "2", "--max-document-bytes", "1KiB", base=base, env=env)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    quarantine = (tmp_path / "one" / "_quarantine.jsonl").read_bytes()
    assert quarantine == (tmp_path / "two" / "_quarantine.jsonl").read_bytes()
    assert shard_bytes_of(tmp_path / "one") == shard_bytes_of(tmp_path / "two")
    got = [json.loads(line) for line in quarantine.decode().splitlines()]
    unit = {"a.jsonl": "line", "b.parquet": "row"}
    assert [(q["file"], q[unit[q["file"]]], q["position"], q["source"]) for q in got] == [
        (f, p, p, f) for f, p in (("a.jsonl", 2), ("a.jsonl", 3), ("a.jsonl", 4), ("a.jsonl", 5), ("a.jsonl", 6),
                                  ("b.parquet", 1))]
    reasons = [q["reason"] for q in got]
    assert "malformed JSON" in reasons[0] and reasons[4] == reasons[5] == reasons[1]
    assert reasons[1] == "exception: RuntimeError: injected fault: a text contains 'POISON'"
    assert reasons[2] == f"record of {len(lines[3])} bytes is longer than max_document_bytes (1024)"
    assert reasons[3] == "invalid UTF-8"
    # a poison line is kept as the record it is (the worker parsed it), like the Source's bad lines
    assert got[1]["raw"] == '{"id": "dup", "text": "POISON here"}'
    assert got[2]["raw"].startswith('{"id": "dup", "text": "long long')
    expect = Expect()
    expect.row("a.jsonl", "dup")
    for p in (2, 3, 4, 5, 6):
        expect.quarantined("a.jsonl", p, "")
    expect.row("a.jsonl", "y")
    expect.row("b.parquet", "p0")
    expect.row("b.parquet", "p2")
    expect.quarantined("b.parquet", 1, "")
    expect.check(tmp_path / "one")
    manifest = json.loads((tmp_path / "one" / "_manifest.json").read_text())
    assert manifest["config"]["max_document_bytes"] == 1024


LONG_DOC_PROBE = """
import resource, sys
import pyarrow as pa
from prep.config import PipelineConfig
from prep.core.stage import Stage
stage = Stage(PipelineConfig(tokenizer=sys.argv[1], features=["num_bytes"]), "tokenizers")
text = open(sys.argv[2], encoding="utf-8").read()
stage(pa.RecordBatch.from_pydict({"id": ["warm"], "text": [text[:1000]]}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out, _ = stage(pa.RecordBatch.from_pydict({"id": ["huge"], "text": [text]}))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, len(out.column("input_ids")[0]))
"""


def test_a_long_document_costs_a_small_multiple_of_its_size_to_tokenize(tmp_path):
    """A tokenizer holds several hundred bytes per token while it works on a text: 3 MB at once took ~400 MB. In
    pieces cut where no token changes, the stage's peak stays a small multiple of the document."""
    from conftest import GPT2

    text = huge_document(3_000_000)
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", LONG_DOC_PROBE, str(GPT2), str(tmp_path / "doc.txt")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    grew, tokens = map(int, proc.stdout.split())
    assert tokens > 500_000
    assert grew < 40 * len(text), grew
    print(f"stage peak grew by {grew / len(text):.1f}x the document")


@pytest.mark.parametrize("tokenizer, backend, corpus", [("gpt2", "tokenizers", "en_fortunes"),
                                                        ("gpt2", "tiktoken", "code_js_npm"),
                                                        ("bert-base-chinese", "tokenizers", "zh_poetry")])
def test_a_long_document_tokenized_in_pieces_gives_the_ids_of_the_whole(tokenizer, backend, corpus, monkeypatch):
    """The pieces' ids, joined, are the ids of the whole text (a direct tokenizers call, special tokens included:
    BERT's [CLS] and [SEP] once, around the whole document). Pieces are made small here, to have many cuts."""
    from conftest import SHARED

    from prep.config import PipelineConfig
    from prep.core import stage as stage_module
    from prep.core.stage import Stage
    from prep.text.hf import tokenizers_major

    monkeypatch.setattr(stage_module, "PIECE_CHARS", 20_000)
    if backend == "tiktoken" and tokenizers_major() >= 1:  # the converter needs 0.2x: 1.x is the fast path here
        backend = "tokenizers"
    path = SHARED / "tokenizers" / f"{tokenizer}.tokenizer.json"
    text = "\n".join(d["text"] for d in corpus_docs(corpus, 3000))[:200_000]
    stage = Stage(PipelineConfig(tokenizer=str(path), features=["num_bytes"]), backend)
    texts = ["a short one", text, "x", "another short one", text[:30_000]]
    calls = []
    encode = stage.backend.encode_batch
    stage.backend.encode_batch = lambda batch: calls.append(list(batch)) or encode(batch)
    out, _ = stage(pa.RecordBatch.from_pydict({"id": list("abcde"), "text": texts}))
    want = [e.ids for e in Tokenizer.from_file(str(path)).encode_batch(texts)]
    assert out.column("input_ids").to_pylist() == want
    # the short ones in one call, as in a batch without a long one; the long one in pieces
    assert calls[0] == [t for t in texts if t is not text] and all(text not in c for c in calls)
    assert len(calls) > 5
