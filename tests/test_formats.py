"""Training-ready outputs: Megatron .bin/.idx, llm.c shards and packed sequences, on real text.

The files are read back with readers written here from the published layouts (not with prep's code), and
checked against the Parquet rows of the same run, or of an unpacked run over the same input (packing), or a
direct tokenizer call. The packing oracles are plain Python: the stream cut every seq_len tokens (concat) and
a best-fit decreasing that scans every bin (bfd).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import GPT2, QWEN2, SAMPLE_TOKENIZER, corpus_docs, prep_cmd, write_jsonl

from prep.text.tokenizer import vocabulary

GPT2_EOS = 50256
SIZES = ("--chunk-bytes", "32KiB", "--shard-bytes", "96KiB")  # ~450 KB of text: 4-5 shards
ALL = ("--format", "parquet", "--format", "megatron", "--format", "llmc")


# ------------------------------------------------------------------------------------- independent readers


def read_megatron(prefix: Path) -> tuple[int, list[np.ndarray]]:
    """(dtype code, sequences) of a Megatron indexed dataset, from the layout of indexed_dataset.py."""
    data = Path(f"{prefix}.idx").read_bytes()
    assert data[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack_from("<Q", data, 9)[0] == 1
    code = data[17]
    dtype = {8: np.dtype("<u2"), 4: np.dtype("<i4")}[code]
    sequences, documents = struct.unpack_from("<QQ", data, 18)
    assert documents == sequences + 1
    at = 34
    lengths = np.frombuffer(data, "<i4", sequences, at)
    at += 4 * sequences
    pointers = np.frombuffer(data, "<i8", sequences, at)
    at += 8 * sequences
    doc_index = np.frombuffer(data, "<i8", documents, at)
    assert at + 8 * documents == len(data)
    assert doc_index.tolist() == list(range(sequences + 1))
    tokens = np.frombuffer(Path(f"{prefix}.bin").read_bytes(), dtype)
    assert int(lengths.sum()) == len(tokens)
    return code, [tokens[p // dtype.itemsize:p // dtype.itemsize + n] for p, n in zip(pointers, lengths, strict=True)]


def read_llmc(path: Path) -> tuple[tuple[int, int], np.ndarray]:
    """((magic, version), tokens) of an llm.c shard: 256 int32 of header, then the tokens."""
    raw = path.read_bytes()
    header = np.frombuffer(raw, "<i4", 256)
    magic, version, count = (int(x) for x in header[:3])
    dtype = {(20240520, 1): "<u2", (20240801, 7): "<u4"}[(magic, version)]
    tokens = np.frombuffer(raw, dtype, offset=1024)
    assert len(tokens) == count
    return (magic, version), tokens


def manifest_of(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def shard_rows(out: Path) -> list[list[dict]]:
    """Each shard's Parquet rows, in shard order."""
    return [pq.read_table(out / s["file"]).to_pylist() for s in manifest_of(out)["shards"]]


def all_files(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}
    files["_journal.jsonl"] = (out / "_journal.jsonl").read_bytes()
    return files


def one_clear_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prep: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 450 KB of real English, Chinese, code and one long Gutenberg book part (cut by packing)."""
    root = tmp_path_factory.mktemp("corpus")
    write_jsonl(root / "a.jsonl", corpus_docs("en_fortunes", 500) + corpus_docs("zh_poetry", 400))
    write_jsonl(root / "b.jsonl", corpus_docs("code_js_npm", 30) + corpus_docs("en_foldoc", 300))
    return root


@pytest.fixture(scope="module")
def unpacked(corpus, tmp_path_factory) -> list[list[dict]]:
    """The plain Parquet rows (GPT-2, no EOS) every packed run is checked against."""
    out = tmp_path_factory.mktemp("unpacked") / "out"
    prep_cmd("run", "--input", corpus, "--output", out, "--tokenizer", GPT2, "--workers", "2", *SIZES,
             "--no-progress", check=True)
    shards = shard_rows(out)
    assert len(shards) >= 3
    return shards


# ------------------------------------------------------------------------------------------- binary formats


def test_megatron_and_llmc_hold_the_parquet_ids_of_each_shard(corpus, tmp_path):
    out = tmp_path / "out"
    prep_cmd("run", "--input", corpus, "--output", out, "--tokenizer", GPT2, "--workers", "2", "--append-eos",
             *SIZES, *ALL, "--no-progress", check=True)
    manifest = manifest_of(out)
    journal = [json.loads(line) for line in (out / "_journal.jsonl").read_text().splitlines()[1:]]
    assert len(manifest["shards"]) >= 3
    listed = set()
    for k, (shard, entry) in enumerate(zip(manifest["shards"], journal, strict=True)):
        stem = f"part-{k:05d}-train"
        names = [f["file"] for f in shard["files"]]
        assert names == [f"{stem}.parquet", f"{stem}_text_document.bin", f"{stem}_text_document.idx",
                         f"{stem}.llmc.bin"]
        assert shard["files"] == entry["files"]  # the journal lists them too: --resume checks what it keeps
        for f in shard["files"]:
            data = (out / f["file"]).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"])
        listed.update(names)
        rows = [np.array(r["input_ids"], np.int64) for r in pq.read_table(out / shard["file"]).to_pylist()]
        assert all(r[-1] == GPT2_EOS for r in rows)  # append_eos: Megatron's --append-eod
        code, sequences = read_megatron(out / f"{stem}_text_document")
        assert code == 8  # uint16: GPT-2's 50,257 ids are fewer than 65,500
        assert len(sequences) == len(rows) == shard["rows"]
        for got, want in zip(sequences, rows, strict=True):
            assert got.tolist() == want.tolist()
        kind, tokens = read_llmc(out / f"{stem}.llmc.bin")
        assert kind == (20240520, 1)
        assert tokens.tolist() == np.concatenate([np.concatenate([[GPT2_EOS], r]) for r in rows]).tolist()
    assert {p.name for p in out.glob("part-*")} == listed


def test_llmc_uint32_and_megatron_int32_for_a_151k_vocabulary(tmp_path):
    """Qwen2's ids pass 65,536: llm.c's uint32 header (magic 20240801, version 7), Megatron's int32; the ids are
    the tokenizer's own."""
    from tokenizers import Tokenizer

    docs = corpus_docs("zh_poetry", 150) + corpus_docs("en_fortunes", 150)
    write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    prep_cmd("run", "--input", tmp_path / "in.jsonl", "--output", out, "--tokenizer", QWEN2, "--workers", "1",
             "--backend", "tokenizers", "--format", "llmc", "--format", "megatron", "--no-progress", check=True)
    tok = Tokenizer.from_file(str(QWEN2))
    want = [tok.encode(d["text"]).ids for d in docs]
    eot = vocabulary(QWEN2)["<|endoftext|>"]  # from the JSON: the 1.x API has no token_to_id
    assert max(max(ids) for ids in want) >= 2**16  # so uint16 would have been wrong
    kind, tokens = read_llmc(out / "part-00000-train.llmc.bin")
    assert kind == (20240801, 7)
    assert tokens.tolist() == [t for ids in want for t in [eot, *ids]]
    code, sequences = read_megatron(out / "part-00000-train_text_document")
    assert code == 4
    assert [s.tolist() for s in sequences] == want
    assert not list(out.glob("part-*.parquet"))  # not asked for
    assert "llmc           1 shard(s)" in prep_cmd("inspect", out, check=True).stdout
    prep_cmd("report", out, check=True)  # a run without Parquet shards
    assert "part-00000-train.llmc.bin" in (out / "report.html").read_text()


@pytest.mark.parametrize("args, needle", [
    (("--pack-seq-len", "0"), "seq_len must be a positive number"),
    (("--pack-seq-len", "128", "--pack-method", "ffd"), "unknown pack method 'ffd'"),
    (("--format", "arrow"), "unknown output format 'arrow'"),
    (("--format", "llmc", "--format", "llmc"), "output format given twice"),
    (("--format", "llmc", "--llmc-dtype", "uint16", "--tokenizer", str(QWEN2)), "llmc uint16 tokens cannot hold"),
])
def test_impossible_settings_are_one_line_errors(tmp_path, args, needle):
    write_jsonl(tmp_path / "in.jsonl", corpus_docs("en_fortunes", 5))
    proc = prep_cmd("run", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out", "--tokenizer", GPT2,
                    *args, "--no-progress")
    one_clear_line(proc, needle)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_pipeline_file_pack_section_is_checked(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", corpus_docs("en_fortunes", 5))
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('[output]\nformats = ["megatron"]\n[pack]\nseq_len = -5\nmethod = "bfd"\n')
    proc = prep_cmd("run", pipeline, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out", "--tokenizer",
                    GPT2, "--no-progress")
    one_clear_line(proc, "seq_len must be a positive number of tokens, not -5")


# ------------------------------------------------------------------------------------------------ packing


def concat_oracle(docs: list[dict], seq_len: int, eos: int) -> list[dict]:
    """doc₁ EOS doc₂ EOS … cut every seq_len tokens, the last row padded with EOS (positions 0, 1, … there)."""
    stream = [(t, d["id"], i) for d in docs for i, t in enumerate([*d["input_ids"], eos])]
    rows = []
    for start in range(0, len(stream), seq_len):
        part = stream[start:start + seq_len]
        lengths, ids, positions = [], [], []
        for k, (_, doc, _) in enumerate(part):
            if k == 0 or doc != part[k - 1][1]:
                lengths.append(0)
                ids.append(doc)
            positions.append(lengths[-1])
            lengths[-1] += 1
        pad = seq_len - len(part)
        rows.append({"input_ids": [t for t, _, _ in part] + [eos] * pad, "position_ids": positions + list(range(pad)),
                     "doc_lengths": lengths, "doc_ids": ids, "num_padding": pad})
    return rows


def bfd_oracle(docs: list[dict], seq_len: int, eos: int, window: int) -> list[dict]:
    """Best-fit decreasing by scanning every bin: pieces of at most seq_len, longest first (stable), each into
    the bin left with the least room (the first such), else a new bin."""
    rows = []
    for w in range(0, len(docs), window):
        items = []
        for d in docs[w:w + window]:
            tokens = [*d["input_ids"], eos]
            items += [(d["id"], tokens[k:k + seq_len]) for k in range(0, len(tokens), seq_len)]
        items.sort(key=lambda item: -len(item[1]))
        bins: list[list] = []
        for item in items:
            rooms = [(seq_len - sum(len(t) for _, t in b), i) for i, b in enumerate(bins)]
            fits = [r for r in rooms if r[0] >= len(item[1])]
            if fits:
                bins[min(fits)[1]].append(item)
            else:
                bins.append([item])
        for b in bins:
            pad = seq_len - sum(len(t) for _, t in b)
            rows.append({"input_ids": [x for _, t in b for x in t] + [eos] * pad,
                         "position_ids": [p for _, t in b for p in range(len(t))] + list(range(pad)),
                         "doc_lengths": [len(t) for _, t in b], "doc_ids": [i for i, _ in b], "num_padding": pad})
    return rows


def assert_packing_invariants(shards: list[list[dict]], unpacked: list[list[dict]], seq_len: int) -> None:
    """Every token of every document exactly once, in order; positions restart at each document."""
    for rows, docs in zip(shards, unpacked, strict=True):
        pieces: dict[str, list[int]] = {}
        for row in rows:
            assert len(row["input_ids"]) == len(row["position_ids"]) == seq_len
            assert sum(row["doc_lengths"]) + row["num_padding"] == seq_len
            at = 0
            for doc, n in zip(row["doc_ids"], row["doc_lengths"], strict=True):
                assert row["position_ids"][at:at + n] == list(range(n))
                pieces.setdefault(doc, []).extend(row["input_ids"][at:at + n])
                at += n
        assert pieces == {d["id"]: [*d["input_ids"], GPT2_EOS] for d in docs}


def packed_run(corpus: Path, out: Path, *args: str, workers: int = 2) -> list[list[dict]]:
    prep_cmd("run", "--input", corpus, "--output", out, "--tokenizer", GPT2, "--workers", str(workers), *SIZES, *ALL,
             *args, "--no-progress", check=True)
    return shard_rows(out)


def check_binaries_hold_rows(out: Path, shards: list[list[dict]]) -> None:
    """With packing, Megatron has one sequence per row and llm.c the rows end to end."""
    for k, rows in enumerate(shards):
        _, sequences = read_megatron(out / f"part-{k:05d}-train_text_document")
        assert [s.tolist() for s in sequences] == [r["input_ids"] for r in rows]
        _, tokens = read_llmc(out / f"part-{k:05d}-train.llmc.bin")
        assert tokens.tolist() == [t for r in rows for t in r["input_ids"]]


def test_concat_is_the_stream_of_documents_and_eos_cut_every_seq_len(corpus, unpacked, tmp_path):
    out = tmp_path / "out"
    shards = packed_run(corpus, out, "--pack-seq-len", "300", "--pack-method", "concat")
    for rows, docs in zip(shards, unpacked, strict=True):
        assert rows == concat_oracle(docs, 300, GPT2_EOS)
    assert_packing_invariants(shards, unpacked, 300)
    check_binaries_hold_rows(out, shards)
    packing = manifest_of(out)["packing"]
    rows = [r for s in shards for r in s]
    in_rows = [sum(doc in r["doc_ids"] for r in s) for s in shards for doc in {d for r in s for d in r["doc_ids"]}]
    assert packing["documents_cut"] == sum(n > 1 for n in in_rows) > 0  # documents found in more than one row
    assert packing["sequences"] == len(rows)
    assert packing["padding"] == sum(r["num_padding"] for r in rows)
    assert packing["padding_fraction"] == round(packing["padding"] / (300 * len(rows)), 6)
    assert manifest_of(out)["counts"]["documents_out"] == sum(len(d) for d in unpacked)


def test_bfd_matches_a_plain_best_fit_decreasing_per_window(corpus, unpacked, tmp_path):
    pipeline = tmp_path / "bfd.toml"
    pipeline.write_text('[pack]\nseq_len = 256\nmethod = "bfd"\nwindow_docs = 70\n')
    out = tmp_path / "out"
    prep_cmd("run", pipeline, "--input", corpus, "--output", out, "--tokenizer", GPT2, "--workers", "2", *SIZES,
             *ALL, "--no-progress", check=True)
    shards = shard_rows(out)
    for rows, docs in zip(shards, unpacked, strict=True):
        assert rows == bfd_oracle(docs, 256, GPT2_EOS, 70)
    assert_packing_invariants(shards, unpacked, 256)
    check_binaries_hold_rows(out, shards)
    packing = manifest_of(out)["packing"]
    long_docs = sum(len(d["input_ids"]) + 1 > 256 for s in unpacked for d in s)
    assert long_docs and packing["documents_cut"] == long_docs
    rows = [r for s in shards for r in s]
    assert packing["docs_per_sequence"] == round(sum(len(r["doc_ids"]) for r in rows) / len(rows), 4)
    inspect = prep_cmd("inspect", out, check=True).stdout
    assert f"packing        bfd into 256 tokens: {len(rows):,} sequences" in inspect
    assert f"megatron       {len(shards)} .bin/.idx pair(s), {len(rows):,} sequences, uint16 tokens" in inspect


def test_packing_does_not_depend_on_how_the_writer_was_fed():
    """The packer's rows are the same whether a shard's documents come at once or in pieces."""
    from prep.io.trainer_formats import OutputSpec, Packer

    docs = corpus_docs("en_foldoc", 120)
    lengths = [len(d["text"]) % 700 + 1 for d in docs]
    table = pa.table({"id": [d["id"] for d in docs],
                      "input_ids": [list(range(n)) for n in lengths]}, schema=pa.schema(
        [("id", pa.string()), ("input_ids", pa.list_(pa.uint32()))]))
    for method in ("concat", "bfd"):
        spec = OutputSpec(eos=7, seq_len=128, method=method, window_docs=25, add_eos=True)
        whole = Packer(spec, pa.string())
        expected = pa.concat_tables([*whole.add(table), *whole.finish()])
        pieces = Packer(spec, pa.string())
        got, at = [], 0
        for n in (1, 13, 2, 40, 64):
            got += pieces.add(table.slice(at, n))
            at += n
        got = pa.concat_tables([*got, *pieces.finish()])
        assert got.equals(expected)
        assert whole.stats == pieces.stats and whole.stats["documents"] == 120


# ---------------------------------------------------------------------------------------- determinism, resume


@pytest.mark.slow
def test_every_format_is_byte_identical_across_workers_and_routers(corpus, tmp_path):
    runs = {}
    for workers, router in ((1, "p2c"), (2, "random"), (3, "round-robin")):
        out = tmp_path / f"w{workers}"
        packed_run(corpus, out, "--pack-seq-len", "512", "--pack-method", "bfd", "--router", router, "--seed",
                   str(workers), workers=workers)
        runs[workers] = all_files(out)
    assert len(runs[1]) > 10
    assert runs[1] == runs[2] == runs[3]


@pytest.mark.slow
@pytest.mark.parametrize("pack", [(), ("--pack-seq-len", "384", "--pack-method", "concat")])
def test_sigkill_the_coordinator_then_resume_gives_the_same_files(tmp_path, pack):
    from test_faults import Run, build_corpus

    corpus = build_corpus(tmp_path / "in")
    extra = (*ALL, *pack)
    ref = Run(corpus, tmp_path / "ref", *extra)
    assert ref.wait()[0] == 0
    out = tmp_path / "out"
    run = Run(corpus, out, *extra)
    run.wait_for(lambda: run.committed() >= 2)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.wait()
    run.kill()
    journal = [json.loads(line) for line in (out / "_journal.jsonl").read_text().splitlines()[1:]]
    for entry in journal:  # what the journal says is committed is there, whole
        for f in entry["files"]:
            assert hashlib.sha256((out / f["file"]).read_bytes()).hexdigest() == f["sha256"]
    resumed = Run(corpus, out, *extra, "--resume", workers=1)
    rc, _, err = resumed.wait()
    assert rc == 0, err
    assert all_files(out) == all_files(tmp_path / "ref")
    assert manifest_of(out)["counts"] == manifest_of(tmp_path / "ref")["counts"]


def test_sample_tokenizer_small_vocab_round_trip(tmp_path):
    """A tokenizer of a few thousand ids: both binary formats stay uint16 and `inspect` names them."""
    write_jsonl(tmp_path / "in.jsonl", corpus_docs("en_fortunes", 50))
    out = tmp_path / "out"
    prep_cmd("run", "--input", tmp_path / "in.jsonl", "--output", out, "--tokenizer", SAMPLE_TOKENIZER, *ALL,
             "--no-progress", check=True)
    rows = pq.read_table(out / "part-00000-train.parquet").column("input_ids").to_pylist()
    code, sequences = read_megatron(out / "part-00000-train_text_document")
    assert code == 8 and [s.tolist() for s in sequences] == rows
    text = prep_cmd("inspect", out, check=True).stdout
    assert "megatron       1 .bin/.idx pair(s), 50 sequences, uint16 tokens" in text
    assert "llmc           1 shard(s)" in text and "magic 20240520" in text


def test_parquet_dictionaries_only_where_values_repeat(tmp_path):
    """Only strings kept from the input (labels, sources) are written with a Parquet dictionary: not token ids,
    not `id`, `text` or `content_hash` (one value per document: Parquet would build it, then give it up), not the
    numbers (zstd packs them tighter without one)."""
    docs = [{"id": f"d{i}", "text": f"line {i % 7}\nsame words here {i % 3}", "lang": ["en", "zh"][i % 2],
             "score": i % 5} for i in range(3000)]
    write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    prep_cmd("run", "--input", tmp_path / "in.jsonl", "--output", out, "--tokenizer", SAMPLE_TOKENIZER,
             "--keep-text", "--keep-column", "lang", "--keep-column", "score", "--no-progress", check=True)
    meta = pq.ParquetFile(next(out.glob("part-*.parquet"))).metadata
    encodings = {meta.row_group(0).column(c).path_in_schema: set(meta.row_group(0).column(c).encodings)
                 for c in range(meta.num_columns)}
    dictionary = {name for name, used in encodings.items() if used & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}}
    assert dictionary == {"lang"}, encodings
    assert {"id", "text", "content_hash", "input_ids.list.element", "num_lines", "frac_digit", "score"} <= set(
        encodings)
    assert pq.read_table(out).column("id").to_pylist() == [d["id"] for d in docs]
