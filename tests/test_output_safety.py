"""prep owns only what it wrote, and --resume continues only onto the input and shards it committed.

Every test here runs the real command line; an "interrupted" run is made by taking a finished run's
directory back to what an interruption after k committed shards leaves (journal cut after k entries, no
manifest, shards past k still on disk as leftovers), which is exactly what --resume reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_TOKENIZER, corpus_docs, prep_cmd, shard_bytes_of, write_jsonl

from prep.io.ownership import MARKER
from prep.io.writer import ShardWriter

ARGS = ("--tokenizer", str(SAMPLE_TOKENIZER), "--backend", "tokenizers", "--chunk-bytes", "8KiB",
        "--shard-bytes", "32KiB", "--workers", "2", "--no-progress")


def run(inputs: Path, out: Path, *extra: str):
    return prep_cmd("run", "--input", inputs, "--output", out, *ARGS, *extra)


def one_line(proc, *needles: str) -> None:
    """A user error: exit 2, one line, no traceback, naming what it must."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_jsonl(root / "a.jsonl", corpus_docs("en_fortunes", 700))
    write_jsonl(root / "b.jsonl", corpus_docs("zh_poetry", 600))
    return root


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "out"
    proc = run(corpus, out)
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("part-*.parquet"))) >= 6
    return out


def interrupted(finished: Path, dest: Path, keep: int) -> Path:
    """A copy of `finished` as a run interrupted after `keep` committed shards leaves it."""
    shutil.copytree(finished, dest)
    (dest / "_manifest.json").unlink()
    (dest / "_routing.parquet").unlink(missing_ok=True)
    lines = (dest / "_journal.jsonl").read_text().splitlines(keepends=True)
    (dest / "_journal.jsonl").write_text("".join(lines[:1 + keep]))
    if (dest / "_quarantine.jsonl").exists():
        os.replace(dest / "_quarantine.jsonl", dest / "_quarantine.jsonl.partial")
    return dest


def journal_entries(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "_journal.jsonl").read_text().splitlines()[1:]]


# ------------------------------------------------------------------------------------ ownership


@pytest.mark.parametrize("name,kind", [("part-2023-archive.parquet", "dir"), ("part-sales-q1.parquet", "file"),
                                       ("report.html", "file"), (".draft.tmp", "file"),
                                       ("part-00000-train.parquet", "file")])
@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_directory_prep_did_not_mark_is_never_emptied(corpus, tmp_path, name, kind, flag):
    out = tmp_path / "out"
    out.mkdir()
    target = out / name
    if kind == "dir":
        target.mkdir()
        (target / "data.parquet").write_bytes(b"mine")
    else:
        target.write_bytes(b"mine")
    one_line(run(corpus, out, flag), name)
    assert (target / "data.parquet" if kind == "dir" else target).read_bytes() == b"mine"


@pytest.mark.parametrize("name", ["part-00099-mine.parquet", "part-abc.parquet", "notes.txt", "sub"])
@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_foreign_file_in_prep_s_own_directory_is_refused_and_kept(finished, corpus, tmp_path, name, flag):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (out / name).mkdir() if name == "sub" else (out / name).write_bytes(b"mine")
    before = shard_bytes_of(out)
    one_line(run(corpus, out, flag), name)
    assert shard_bytes_of(out) == before
    assert (out / name).exists()


def test_overwrite_deletes_only_its_own_files_and_never_follows_a_link(finished, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    precious = tmp_path / "precious.parquet"
    precious.write_bytes(b"the user's")
    (out / "part-00042-train.parquet").symlink_to(precious)
    one_line(run(corpus, out, "--overwrite"), "part-00042-train.parquet", "symbolic link")
    assert precious.read_bytes() == b"the user's"
    (out / "part-00042-train.parquet").unlink()
    (out / ".part-00003-train.parquet.tmp").write_bytes(b"a leftover")  # prep's own temp name
    proc = run(corpus, out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert shard_bytes_of(out) == shard_bytes_of(finished)
    assert not (out / ".part-00003-train.parquet.tmp").exists() and (out / MARKER).exists()


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_output_overlapping_an_input_is_refused(tmp_path, where):
    corpus = tmp_path / "same"
    write_jsonl(corpus / "a.jsonl", corpus_docs("en_fortunes", 50))
    rows = [json.loads(line) for line in (corpus / "a.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), corpus / "part-00000.parquet")
    before = {p.name: p.read_bytes() for p in corpus.iterdir()}
    if where == "same":
        proc = run(corpus, corpus, "--overwrite")
        needle = "is the input"
    elif where == "inside":
        proc = run(corpus, corpus / "out", "--overwrite")
        needle = "inside the input directory"
    else:
        proc = run(corpus / "a.jsonl", tmp_path, "--overwrite")
        needle = "lies inside the output"
    one_line(proc, needle)
    assert {p.name: p.read_bytes() for p in corpus.iterdir()} == before


# ---------------------------------------------------------------------------------------- resume


def test_resume_after_a_deleted_and_a_corrupted_shard_recomputes_them(finished, corpus, tmp_path):
    out = interrupted(finished, tmp_path / "out", keep=5)
    entries = journal_entries(out)
    (out / entries[1]["file"]).unlink()
    (out / entries[3]["file"]).write_bytes(b"garbage" * 100)
    proc = run(corpus, out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"{entries[1]['file']} is missing" in proc.stderr
    assert shard_bytes_of(out) == shard_bytes_of(finished)
    manifest = json.loads((out / "_manifest.json").read_text())
    for shard in manifest["shards"]:
        assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    quarantine = [(p / "_quarantine.jsonl").read_bytes() if (p / "_quarantine.jsonl").exists() else None
                  for p in (out, finished)]
    assert quarantine[0] == quarantine[1]


def test_resume_keeps_intact_committed_shards(finished, corpus, tmp_path):
    out = interrupted(finished, tmp_path / "out", keep=4)
    entries = journal_entries(out)
    inodes = {e["file"]: (out / e["file"]).stat().st_ino for e in entries}
    proc = run(corpus, out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert {f: (out / f).stat().st_ino for f in inodes} == inodes  # not written again
    assert shard_bytes_of(out) == shard_bytes_of(finished)


def _swap_two_lines_of_equal_length(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    by_len: dict[int, int] = {}
    for i, line in enumerate(lines[:100]):
        if len(line) in by_len and line != lines[by_len[len(line)]]:
            j = by_len[len(line)]
            lines[i], lines[j] = lines[j], lines[i]
            stat = path.stat()
            path.write_bytes(b"".join(lines))
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as they were
            return
        by_len[len(line)] = i
    raise AssertionError("no two distinct lines of equal length")


@pytest.mark.parametrize("change", ["swap-same-size-same-mtime", "mtime-only", "size"])
def test_resume_refuses_changed_input(finished, corpus, tmp_path, change):
    inputs = tmp_path / "in"
    shutil.copytree(corpus, inputs)
    for p, q in zip(sorted(corpus.iterdir()), sorted(inputs.iterdir()), strict=True):
        os.utime(q, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns))
    out = interrupted(finished, tmp_path / "out", keep=3)  # inputs are named relative to the argument
    target = inputs / "a.jsonl"
    if change == "swap-same-size-same-mtime":
        _swap_two_lines_of_equal_length(target)
        needle = "a.jsonl differs from what was committed"
    elif change == "mtime-only":
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
        needle = "a.jsonl was modified"
    else:
        with open(target, "ab") as f:
            f.write(b'{"text": "one more"}\n')
        needle = "a.jsonl changed size"
    committed = {e["file"]: (out / e["file"]).read_bytes() for e in journal_entries(out)}
    one_line(run(inputs, out, "--resume"), needle)
    assert {f: (out / f).read_bytes() for f in committed} == committed
    assert not (out / "_manifest.json").exists()


def test_resume_refuses_a_swap_even_when_the_journal_is_all_there_is(corpus, tmp_path):
    """The digest check must not depend on mtime: with size and mtime restored, the swap is still seen."""
    inputs = tmp_path / "in"
    shutil.copytree(corpus, inputs)
    out = tmp_path / "out"
    proc = run(inputs, out)
    assert proc.returncode == 0, proc.stderr
    interrupted_dir = interrupted(out, tmp_path / "cut", keep=2)
    _swap_two_lines_of_equal_length(inputs / "a.jsonl")
    one_line(run(inputs, interrupted_dir, "--resume"), "a.jsonl differs from what was committed")


# --------------------------------------------------------------------------------------- inspect


def test_inspect_verifies_every_shard(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    assert prep_cmd("inspect", out).returncode == 0
    victim = sorted(out.glob("part-*.parquet"))[2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    victim.write_bytes(bytes(data))
    proc = prep_cmd("inspect", out)
    assert proc.returncode == 1 and victim.name in proc.stderr and "sha256" in proc.stderr, proc.stderr
    assert prep_cmd("inspect", out, "--no-verify").returncode == 0
    victim.unlink()
    proc = prep_cmd("inspect", out, "--json")
    assert proc.returncode == 1 and f"{victim.name} is missing" in proc.stderr


# ------------------------------------------------------------------------------ writer invariants


def test_manifest_is_not_written_when_the_counts_do_not_add_up(tmp_path):
    entry = {"documents_in": 10, "rows": 8, "quarantined": 1, "filtered": 0, "tokens": 5, "text_bytes": 9,
             "file": None, "quarantine_bytes": 0}
    writer = ShardWriter(tmp_path, 1 << 20, "zstd", 1, [entry])
    with pytest.raises(RuntimeError, match="accounting mismatch"):
        writer.finish({}, None)
    assert not (tmp_path / "_manifest.json").exists()


def test_shard_numbers_are_gapless_when_a_shard_has_no_rows(tmp_path):
    """A shard whose every document is filtered (whitespace only) has no file; the next one takes its number."""
    docs = corpus_docs("en_fortunes", 150) + [{"text": " \n\t " * 200} for _ in range(200)] + corpus_docs(
        "en_foldoc", 150)
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "out"
    proc = run(tmp_path / "in", out)
    assert proc.returncode == 0, proc.stderr
    entries = journal_entries(out)
    assert any(e["file"] is None for e in entries), "no shard came out empty: the test lost its point"
    names = sorted(p.name for p in out.glob("part-*.parquet"))
    assert names == [f"part-{i:05d}-train.parquet" for i in range(len(names))]
    rows = pq.read_table(out).column("id").to_pylist()
    assert len(rows) == 300 and len(set(rows)) == 300


def test_negative_workers_is_one_clear_line_and_help_says_what_zero_means(corpus, tmp_path):
    one_line(run(corpus, tmp_path / "out", "--workers", "-1"), "--workers -1", "0 for the CPU count")
    help_text = " ".join(w for w in prep_cmd("run", "--help", env={"COLUMNS": "200"}).stdout.split() if w != "│")
    assert "0 (the default) means the CPU count" in help_text


@pytest.mark.parametrize("change", ["swap-same-size-same-mtime", "rewritten"])
def test_resume_refuses_a_changed_parquet_file(tmp_path, change):
    """A Parquet piece is proved by the stored bytes of its row groups: two texts of equal length swapped
    between row groups (same size, same mtime, same footer) are seen as well as a rewritten file."""
    docs = corpus_docs("en_fortunes", 700)
    target = tmp_path / "in" / "p.parquet"
    target.parent.mkdir()

    def write(texts: list[str]) -> None:  # plain pages, no statistics: a swap keeps every byte count
        pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": texts}), target, row_group_size=50,
                       compression="none", use_dictionary=False, write_statistics=False)

    texts = [d["text"] for d in docs]
    write(texts)
    out = tmp_path / "out"
    proc = run(target.parent, out)
    assert proc.returncode == 0, proc.stderr
    assert len(journal_entries(out)) >= 4
    interrupted_dir = interrupted(out, tmp_path / "cut", keep=2)
    stat, footer = target.stat(), pq.read_metadata(target).to_dict()
    if change == "swap-same-size-same-mtime":
        i, j = next((i, j) for i in range(20) for j in range(600, 700) if len(texts[i].encode()) ==
                    len(texts[j].encode()) and texts[i] != texts[j])
        texts[i], texts[j] = texts[j], texts[i]
        write(texts)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert target.stat().st_size == stat.st_size and pq.read_metadata(target).to_dict() == footer
        needle = "p.parquet differs from what was committed"
    else:
        write(texts[::-1])
        needle = "p.parquet"
    committed = {e["file"]: (interrupted_dir / e["file"]).read_bytes() for e in journal_entries(interrupted_dir)}
    one_line(run(target.parent, interrupted_dir, "--resume"), needle)
    assert {f: (interrupted_dir / f).read_bytes() for f in committed} == committed
