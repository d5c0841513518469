"""Faults for real: killed workers, writers and coordinators, poison documents, interruptions, full disks.

Each test runs `prep run` as a child process in its own session, records every process the run starts,
disturbs it, and then checks the three things that matter: the final shards are byte-identical to an
undisturbed run's, `documents_in = out + quarantined + filtered`, and no process and no /dev/shm segment
of the run is left. Each also checks that its fault landed where it meant to (a shard committed before the
kill, a task charged an attempt, a process replaced). The tests that use the `reference` run go through both
tokenizer backends: `tokenizers` and the default, `auto` (the fast path where it verifies). The fault hook is
PREP_DEBUG_FAULT (see prep/engines/local/worker.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, SAMPLE_TOKENIZER, as_if_not_root, corpus_docs, prep_cmd, shard_bytes_of, write_jsonl

from prep.engines.local.coordinator import SHM_RECORD

ARGS = ("--tokenizer", str(SAMPLE_TOKENIZER), "--backend", "tokenizers", "--chunk-bytes", "16KiB",
        "--shard-bytes", "256KiB", "--no-progress")


def args_for(backend: str) -> tuple:
    return tuple(backend if a == "tokenizers" else a for a in ARGS)
ONE_SHARD = ("--shard-bytes", "64MiB")


def build_corpus(root: Path, fortunes: int = 3000, poetry: int = 3000) -> Path:
    """About 2.8 MB of real English, Chinese and code in two files: ~120 chunks of 16 KiB, 8 shards."""
    write_jsonl(root / "a.jsonl", corpus_docs("en_fortunes", fortunes))
    write_jsonl(root / "b.jsonl", corpus_docs("zh_poetry", poetry) + corpus_docs("code_python_stdlib", 40))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module", params=["tokenizers", "auto"])
def reference(corpus, tmp_path_factory, request) -> dict:
    """The undisturbed run every disturbed one must equal, byte for byte, per backend (`args`: its flags)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    args = args_for(request.param)
    run = Run(corpus, out, args=args)
    rc, _, err = run.wait()
    assert rc == 0, err
    backend = json.loads((out / "_manifest.json").read_text())["tokenizer"]["backend"]
    if request.param == "tokenizers":  # the installed tokenizers: 0.2x, or 1.x with prep[fast]
        assert backend in ("tokenizers", "tokenizers-1"), backend
    else:  # auto took a fast path: tiktoken (0.2x installed) or tokenizers-1
        assert backend in ("tiktoken", "tokenizers-1"), backend
    wall_s = json.loads((out / "_manifest.json").read_text())["timings"]["wall_s"]
    return snapshot(out) | {"args": args, "wall_s": wall_s}


def snapshot(out: Path) -> dict:
    manifest = json.loads((out / "_manifest.json").read_text())
    quarantine = out / "_quarantine.jsonl"
    return {"shards": shard_bytes_of(out), "counts": manifest["counts"],
            "quarantine": quarantine.read_bytes() if quarantine.exists() else b""}


def rows_of(shards: dict[str, bytes]) -> list[tuple]:
    """(id, input_ids) of every row of the shards, in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(pa.BufferReader(shards[name]), columns=["id", "input_ids"]) for name in sorted(shards)]
    return [(r["id"], tuple(r["input_ids"])) for t in tables for r in t.to_pylist()]


def assert_same_or_killed_thrice(out: Path, reference: dict, inputs: Path) -> None:
    """Byte-identical to the reference, unless kills at random moments hit one document's three tries (a long
    document on a loaded machine): then that document is quarantined for the kills, with its raw record, and
    every other row is the reference's, in order: nothing lost, nothing doubled."""
    got = snapshot(out)
    if not got["quarantine"]:
        assert_same(out, reference)
        return
    records = [json.loads(line) for line in got["quarantine"].decode().splitlines()]
    assert all(r["reason"] == "worker killed by signal SIGKILL" for r in records), records
    lines = [(inputs / r["file"]).read_text(encoding="utf-8").splitlines()[r["line"] - 1] for r in records]
    assert [r["raw"] for r in records] == [line[:1000] for line in lines]  # the record itself, as in the input
    gone = {json.loads(line)["id"] for line in lines}
    assert len(gone) == len(records) and got["counts"]["quarantined"] == len(records)
    assert rows_of(got["shards"]) == [row for row in rows_of(reference["shards"]) if row[0] not in gone]


class Run:
    """One `prep run` in a session of its own, watched: every process it starts is remembered."""

    def __init__(self, inputs: Path, out: Path, *extra: str, workers: int = 2, env: dict | None = None,
                 args: tuple = ARGS, permissions: bool = False) -> None:
        self.out = out
        self.children_before = {p.pid for p in psutil.Process().children(recursive=True)}
        self.log = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115 - live with the run
        cmd = [sys.executable, "-m", "prep", "run", "--input", str(inputs), "--output", str(out), *args,
               "--workers", str(workers), *extra]
        if permissions:
            cmd = [*as_if_not_root(), *cmd]
        self.proc = subprocess.Popen(cmd, stdout=self.log[0], stderr=self.log[1], cwd=ROOT, start_new_session=True,
                                     env=dict(os.environ, **(env or {})))
        self.seen: dict[int, psutil.Process] = {}
        self.prefixes: set[str] = set()  # of the run's /dev/shm segments, as its record names them

    def watch(self) -> list[psutil.Process]:
        """Record the run's processes and its segment prefix now; return the processes."""
        with contextlib.suppress(OSError):
            prefix = (self.out / SHM_RECORD).read_text().strip()
            if re.fullmatch(r"prep_[0-9a-f]{16}_", prefix):  # not "" (read while being written): that globs all
                self.prefixes.add(prefix)
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in found:
            self.seen.setdefault(p.pid, p)
        return found

    def named(self, prefix: str) -> list[psutil.Process]:
        procs = []
        for p in self.watch():
            try:
                if p.name().startswith(prefix) and p.status() != psutil.STATUS_ZOMBIE:
                    procs.append(p)
            except psutil.NoSuchProcess:
                pass
        return procs

    def role(self, needle: str) -> list[psutil.Process]:
        """The run's live processes whose command line holds `needle` (the forkserver, the resource tracker)."""
        return [p for p in self.watch() if needle in " ".join(_cmdline(p)) and _alive(p)]

    def starting_workers(self) -> list[psutil.Process]:
        """Workers still starting: children of the forkserver that have not taken their name yet."""
        procs = self.watch()
        servers = {p.pid for p in procs if "forkserver" in " ".join(_cmdline(p))}
        starting = []
        for p in procs:
            try:
                if p.ppid() in servers and not p.name().startswith("prep-") and p.status() != psutil.STATUS_ZOMBIE:
                    starting.append(p)
            except psutil.NoSuchProcess:
                pass
        return starting

    def wait_for(self, condition, timeout: float = 60, every: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the run ended first:\n{self.output()[1]}"
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(every)

    def committed(self) -> int:
        return len(self.committed_entries())

    def committed_entries(self) -> list[dict]:
        """The journal's complete shard lines now (a line being appended is not one yet)."""
        journal = self.out / "_journal.jsonl"
        if not journal.exists():
            return []
        entries = []
        for line in journal.read_text().splitlines()[1:]:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return entries

    def output(self) -> tuple[str, str]:
        texts = []
        for f in self.log:
            f.seek(0)
            texts.append(f.read())
        return texts[0], texts[1]

    def wait(self, timeout: float = 240) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.watch()
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise AssertionError(f"prep did not end in {timeout} s:\n{self.output()[1]}")
            time.sleep(0.02)
        return self.proc.returncode, *self.output()

    def kill(self) -> None:
        self.watch()
        self.proc.kill()
        self.proc.wait()

    def assert_no_process_left(self, timeout: float = 10) -> None:
        """Every process the run started is gone (a zombie waiting for init counts as gone)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = []
            for p in self.seen.values():
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{p.pid} {p.name()}")
                except psutil.NoSuchProcess:
                    pass
            if not alive:
                return
            assert time.monotonic() < deadline, f"processes left: {alive}"
            time.sleep(0.05)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def segments(run: Run) -> list[str]:
    """The run's segments in /dev/shm, under every prefix it was seen to record."""
    run.watch()
    return sorted(p.name for prefix in run.prefixes for p in Path("/dev/shm").glob(prefix + "*"))


def assert_clean(run: Run, writable: bool = True) -> None:
    """No process, no segment, no temp file of the run is left; nor the record of its segments, unless the
    output directory became read-only: then the record and the temp files of shards being written stay, and the
    next run there removes them (a shard is sealed while the next one is written, so a shard's temp file may
    exist when a commit shows)."""
    run.assert_no_process_left()
    assert segments(run) == []
    assert not (run.out / SHM_RECORD).exists() or not writable
    assert list(run.out.glob(".*.tmp")) == [] or not writable
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= run.children_before


def assert_same(out: Path, reference: dict) -> dict:
    """Byte-identical shards and quarantine, the same counts, and the accounting identity."""
    got = snapshot(out)
    assert sorted(got["shards"]) == sorted(reference["shards"])
    assert got["shards"] == reference["shards"]
    assert got["quarantine"] == reference["quarantine"]
    counts = got["counts"]
    assert counts["documents_in"] == counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    assert counts == reference["counts"]
    return got


def assert_committed_intact(out: Path) -> list[dict]:
    """Every shard present is in the journal with its checksum: nothing that only looks complete."""
    import hashlib

    lines = [json.loads(line) for line in (out / "_journal.jsonl").read_text().splitlines()]
    entries = [e for e in lines[1:] if e.get("file")]
    files = sorted(p.name for p in out.glob("part-*.parquet"))
    assert files == sorted(e["file"] for e in entries)
    for e in entries:
        assert hashlib.sha256((out / e["file"]).read_bytes()).hexdigest() == e["sha256"]
    assert not (out / "_manifest.json").exists()
    return entries


def assert_one_clear_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("prep: error: "), err
    for needle in needles:
        assert needle in last, last


def at_random_point(run: Run, rng: random.Random, at_least: int = -1, at_most: int = 6) -> str:
    """Wait for a random moment of the run: during start-up, or after 0-6 of its 8 shards were committed and
    before the next is (progress, not wall time, so that a slow or fast machine still lands inside the run: a
    run that commits a shard every few ms is not waited out). Says where."""
    target = rng.randint(at_least, at_most)
    if target < 0:
        time.sleep(rng.uniform(0.05, 1.0))
        return "start-up"
    run.wait_for(lambda: run.committed() >= target, every=0.002)
    deadline = time.monotonic() + rng.uniform(0, 0.2)
    while time.monotonic() < deadline and run.committed() <= target:
        time.sleep(0.002)
    return f"after {target} shards"


def resume(corpus: Path, out: Path, reference: dict, workers: int = 2) -> dict:
    run = Run(corpus, out, "--resume", workers=workers, args=reference["args"])
    rc, _, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    return assert_same(out, reference)


# ------------------------------------------------------------------------------------------- everyday


def test_poison_document_that_kills_its_worker_is_isolated(tmp_path):
    """A document that kills every worker it meets is bisected out and quarantined with the signal; the
    rest equals, byte for byte, a run over the input without it."""
    docs = corpus_docs("en_fortunes", 700)
    poison = dict(docs[333], text=docs[333]["text"] + " POISON-KILL")
    write_jsonl(tmp_path / "clean" / "in.jsonl", docs[:333] + docs[334:])
    write_jsonl(tmp_path / "poisoned" / "in.jsonl", docs[:333] + [poison] + docs[334:])
    ref = Run(tmp_path / "clean", tmp_path / "ref", *ONE_SHARD)
    assert ref.wait()[0] == 0
    run = Run(tmp_path / "poisoned", tmp_path / "out", *ONE_SHARD, env={"PREP_DEBUG_FAULT": "kill:POISON-KILL"})
    rc, out, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    assert shard_bytes_of(tmp_path / "out") == shard_bytes_of(tmp_path / "ref")
    quarantine = [json.loads(line) for line in (tmp_path / "out" / "_quarantine.jsonl").read_text().splitlines()]
    poison_line = (tmp_path / "poisoned" / "in.jsonl").read_text().splitlines()[333]  # the record, as written
    assert json.loads(poison_line) == poison
    assert quarantine == [{"source": "in.jsonl", "position": 334, "reason": "worker killed by signal SIGKILL",
                           "raw": poison_line[:1000], "file": "in.jsonl", "line": 334}]
    counts = json.loads((tmp_path / "out" / "_manifest.json").read_text())["counts"]
    assert [counts[k] for k in ("documents_in", "documents_out", "quarantined", "filtered")] == [700, 699, 1, 0]
    assert "faults survived" in out


def test_workers_dying_at_start_stop_the_run(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", corpus_docs("en_fortunes", 50))
    run = Run(tmp_path / "in.jsonl", tmp_path / "out", env={"PREP_DEBUG_FAULT": "start:kill"})
    started = time.monotonic()
    rc, _, err = run.wait(timeout=60)
    assert rc == 1, err
    assert time.monotonic() - started < 30
    assert_one_clear_line(err, "workers keep dying at start", "SIGKILL")
    assert_clean(run)


def test_a_stage_that_fails_on_everything_stops_the_run(tmp_path):
    """Not a poison document but a broken stage: the run stops instead of quarantining the corpus one by one."""
    write_jsonl(tmp_path / "in.jsonl", corpus_docs("en_fortunes", 300))
    run = Run(tmp_path / "in.jsonl", tmp_path / "out", env={"PREP_DEBUG_FAULT": "raise: "})
    rc, _, err = run.wait(timeout=120)
    assert rc == 1, err
    assert_one_clear_line(err, "no document gets through the stage", "injected fault")
    assert_clean(run)


def test_full_dev_shm_is_an_error_not_a_sigbus():
    """Segments are reserved when made: a /dev/shm too small (Docker's default is 64 MB) fails at once, cleanly.
    (In a child process: shared memory starts a resource tracker, which must not outlive this test.)"""
    name = f"prep_test{os.getpid()}_"
    size = shutil.disk_usage("/dev/shm").free // 2 + 2**30
    code = ("import errno, sys\nfrom prep.engines.local.transport import SlotPool\n"
            f"try:\n    SlotPool({name + 'in'!r}, 2, {size}, create=True)\n"
            "except OSError as exc:\n    sys.exit(0 if exc.errno == errno.ENOSPC else 3)\nsys.exit(4)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not list(Path("/dev/shm").glob(name + "*"))


@pytest.fixture
def small(tmp_path) -> Path:
    return write_jsonl(tmp_path / "in" / "a.jsonl", corpus_docs("en_fortunes", 300))


def test_shared_memory_names_are_unpredictable_and_others_are_left_alone(small, tmp_path):
    """Another local user who creates the names an older prep derived from the output path (a directory that
    cannot be unlinked, a file) neither stops a run nor loses them; each run draws new names."""
    import hashlib

    out = tmp_path / "out"
    out.mkdir()
    old = Path("/dev/shm") / ("prep_" + hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10] + "_")
    squatted = [Path(f"{old}in"), Path(f"{old}out")]
    squatted[0].mkdir()
    squatted[1].write_bytes(b"not prep's")
    try:
        prefixes = []
        for extra in ((), ("--overwrite",)):
            run = Run(small, out, *extra, *ONE_SHARD)
            rc, _, err = run.wait()
            assert rc == 0, err
            assert_clean(run)
            assert len(run.prefixes) == 1, run.prefixes
            prefixes += run.prefixes
        assert all(re.fullmatch(r"prep_[0-9a-f]{16}_", p) for p in prefixes) and prefixes[0] != prefixes[1]
        assert squatted[0].is_dir() and squatted[1].read_bytes() == b"not prep's"
    finally:
        squatted[0].rmdir()
        squatted[1].unlink()


SHM_HOOK = """import secrets, sys
from prep.engines.local import transport
from prep.cli import main
mode, token = sys.argv.pop(1), sys.argv.pop(1)
real = secrets.token_hex
if mode == "taken-once":
    tokens = iter([token])
    secrets.token_hex = lambda n: next(tokens, None) or real(n)
elif mode == "taken-always":
    secrets.token_hex = lambda n: token
elif mode == "refused":
    def refuse(name, size):
        raise PermissionError(13, "Permission denied")
    transport._create = refuse
main()
"""


@pytest.mark.parametrize("mode", ["taken-once", "taken-always", "refused"])
def test_a_segment_that_cannot_be_created_is_one_line(small, tmp_path, mode):
    """A drawn name that exists is someone else's: another is drawn (three tries). Failing to create a segment
    at all is one clear line, exit 1, and nothing of the run is left."""
    token = os.urandom(8).hex()
    taken = Path(f"/dev/shm/prep_{token}_in")
    taken.write_bytes(b"someone else's")
    out = tmp_path / "out"
    try:
        proc = subprocess.run([sys.executable, "-c", SHM_HOOK, mode, token, "run", "--input", small, "--output",
                               out, *ARGS, "--workers", "2"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        if mode == "taken-once":
            assert proc.returncode == 0, proc.stderr
            assert shard_bytes_of(out)
        else:
            assert proc.returncode == 1, proc.stderr
            assert_one_clear_line(proc.stderr, *{"taken-always": ["cannot create a shared-memory segment", "exists"],
                                                 "refused": ["shared memory", "Permission denied"]}[mode])
            assert "--workers" not in proc.stderr  # no advice about size when size is not the problem
        assert taken.read_bytes() == b"someone else's"
        assert not (out / SHM_RECORD).exists()
        assert list(Path("/dev/shm").glob(f"prep_{token}_*")) == [taken]  # nothing of ours under that name
    finally:
        taken.unlink()


def test_sigterm_then_resume_is_byte_identical(corpus, reference, tmp_path):
    out = tmp_path / "out"
    run = Run(corpus, out, args=reference["args"])
    run.wait_for(lambda: run.committed() >= 2)
    run.proc.send_signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 143, err
    assert_one_clear_line(err, "interrupted (SIGTERM)", "--resume")
    assert_clean(run)
    assert len(assert_committed_intact(out)) >= 2
    assert "unfinished run" in prep_cmd("inspect", out).stderr
    resume(corpus, out, reference)
    assert "unfinished" not in prep_cmd("inspect", out, check=True).stdout


def test_resume_refuses_other_input_tokenizer_or_pipeline(tmp_path):
    from conftest import GPT2

    write_jsonl(tmp_path / "in" / "a.jsonl", corpus_docs("en_fortunes", 2500))
    out = tmp_path / "out"
    base = ["run", "--input", tmp_path / "in", "--output", out, *ARGS, "--shard-bytes", "96KiB"]
    prep_cmd(*base, check=True)
    journal = (out / "_journal.jsonl").read_text().splitlines(keepends=True)
    assert len(journal) >= 4, "the run must commit several shards for resume to skip"
    (out / "_manifest.json").unlink()  # as an interruption after two committed shards leaves it
    (out / "_journal.jsonl").write_text("".join(journal[:3]))
    committed = {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))[:2]}
    base.append("--resume")
    a = tmp_path / "in" / "a.jsonl"
    original, stat = a.read_bytes(), a.stat()

    def restore() -> None:
        a.write_bytes(original)
        os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        (out / "_journal.jsonl").write_text("".join(journal[:3]))

    def written_by_round_3() -> None:  # its content_hash was BLAKE2b: its journal names no features version
        first = json.loads(journal[0])
        del first["fingerprint"]["features"]
        (out / "_journal.jsonl").write_text(json.dumps(first) + "\n" + "".join(journal[1:3]))

    def written_by_round_5() -> None:  # its shards' row groups and dictionaries were encoded otherwise
        first = json.loads(journal[0])
        del first["fingerprint"]["encoding"]
        (out / "_journal.jsonl").write_text(json.dumps(first) + "\n" + "".join(journal[1:3]))

    def swap_equal_lines() -> None:  # same size, same mtime: only the content digest can tell
        lines = original.splitlines(keepends=True)
        i, j = next((i, j) for j in range(200) for i in range(j) if len(lines[i]) == len(lines[j]) != 0
                    and lines[i] != lines[j])
        lines[i], lines[j] = lines[j], lines[i]
        a.write_bytes(b"".join(lines))
        os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    cases = [
        (lambda: a.write_bytes(original[: original.rindex(b"\n", 0, -1) + 1]), [], "a.jsonl changed size"),
        (swap_equal_lines, [], "a.jsonl differs from what was committed"),
        (lambda: os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9)), [], "a.jsonl was modified"),
        (None, ["--tokenizer", GPT2], "different tokenizer"),
        (None, ["--chunk-bytes", "8KiB"], "different pipeline (chunk_bytes)"),
        (None, ["--features", "num_chars"], "different pipeline (features)"),
        (written_by_round_3, [], "different version of prep (it computes features differently)"),
        (written_by_round_5, [], "different version of prep (it encodes shards differently)"),
    ]
    for change, flags, message in cases:
        if change:
            change()
        args = list(base)
        for flag, value in zip(flags[::2], flags[1::2], strict=True):
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        proc = prep_cmd(*args)
        assert proc.returncode == 2, (message, proc.stderr)
        assert_one_clear_line(proc.stderr, message)
        assert {n: (out / n).read_bytes() for n in committed} == committed
        restore()
    proc = prep_cmd(*base, "--workers", "3", "--router", "round-robin")  # how, not what: allowed
    assert proc.returncode == 0, proc.stderr
    assert {n: (out / n).read_bytes() for n in committed} == committed
    finished = prep_cmd(*base)
    assert finished.returncode == 2 and "holds a finished run" in finished.stderr


@pytest.mark.parametrize("row_group_bytes", [None, 500_000])
def test_shard_bytes_do_not_depend_on_how_a_chunk_was_split(tmp_path, monkeypatch, row_group_bytes):
    """After a fault a chunk arrives in pieces (bisection), out of order; its shard must still be the same
    bytes (Parquet pages depend on how the table is cut), in one row group or several."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prep.io import writer

    if row_group_bytes:
        monkeypatch.setattr(writer, "ROW_GROUP_BYTES", row_group_bytes)
    n, per_chunk = 12_000, 4_000
    lengths = [i % 50 + 20 for i in range(n)]
    table = pa.table({"id": [f"d{i}" for i in range(n)],
                      "input_ids": pa.array([[(i * 7 + j) % 50_000 for j in range(k)] for i, k in enumerate(lengths)],
                                            pa.list_(pa.uint32())),
                      "num_tokens": lengths})
    stats = {"documents": 0, "filtered": 0, "tokens": 0}
    written = []
    for name, step in (("whole", per_chunk), ("pieces", 37)):
        out = tmp_path / name
        out.mkdir()
        core = writer.ShardWriter(out, shard_bytes=10**9, compression="zstd", start_seq=0, entries=[])
        for seq, lo in enumerate(range(0, n, per_chunk)):
            core.add_chunk(seq, {"rows": per_chunk, "text_bytes": 1, "documents_in": per_chunk, "quarantine": []})
            cuts = [*range(lo, lo + per_chunk, step), lo + per_chunk]
            for start, stop in reversed(list(itertools.pairwise(cuts))):
                core.add_part(seq, start - lo, stop - lo, table.slice(start, stop - start), stats)
        core.finish({}, None)
        written.append(shard_bytes_of(out))
        assert pq.read_table(out).equals(table)
        groups = sum(pq.ParquetFile(p).num_row_groups for p in out.glob("part-*.parquet"))
        assert (groups > 1) == bool(row_group_bytes)
    assert written[0] == written[1]


def test_one_run_at_a_time_per_output_directory(corpus, tmp_path):
    out = tmp_path / "out"
    first = Run(corpus, out, "--chunk-timeout", "600", env={"PREP_DEBUG_FAULT": "hang:月"})
    first.wait_for(lambda: first.committed() >= 1)
    mine = segments(first)
    assert mine
    second = prep_cmd("run", "--input", corpus, "--output", out, *ARGS, "--overwrite")
    assert second.returncode == 2
    assert_one_clear_line(second.stderr, f"another prep run is writing to {out}")
    assert segments(first) == mine and first.proc.poll() is None  # the first run lost nothing
    first.proc.send_signal(signal.SIGINT)
    assert first.wait()[0] == 130
    assert_clean(first)


# ------------------------------------------------------------------------------------------ the matrix


def assert_recovered_from_one_death(run: Run, out: Path, reference: dict) -> None:
    """The run ends well, clean, byte-identical to the undisturbed one, with exactly one worker replaced."""
    rc, _, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    assert_same(out, reference)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert sum(w["restarts"] for w in manifest["routing"]["workers"]) == 1


def retried_tasks(out: Path) -> int:
    """Tasks that succeeded only after a fault charged them an attempt (the routing table's own record)."""
    import pyarrow.parquet as pq

    return sum(a > 0 for a in pq.read_table(out / "_routing.parquet").column("attempt").to_pylist())


def busy_worker(run: Run) -> psutil.Process:
    """A ready worker that is computing now (its CPU time grows; the tokenizer may run in a thread of its own, so
    the process state says little): killing it costs a task an attempt."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = {}
        for p in run.named("prep-worker"):
            with contextlib.suppress(psutil.NoSuchProcess):
                before[p] = sum(p.cpu_times()[:2])
        time.sleep(0.05)
        for p, cpu in before.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                if sum(p.cpu_times()[:2]) - cpu >= 0.01:
                    return p
        assert run.proc.poll() is None, "the run ended before a worker was seen busy"
    raise AssertionError("no worker seen busy")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_one_worker_at_a_random_point(corpus, reference, tmp_path, seed):
    rng = random.Random(seed)
    # Slowed workers (they sleep 4x a task's compute before sending its result, still busy) so that a worker seen
    # computing is killed on its task, not just after its result: with tasks of a few ms, a sleep as long as the
    # compute (0:2) let CI's loaded machine kill one worker after its result once.
    run = Run(corpus, tmp_path / "out", "--debug-slow-worker", "0:5", "--debug-slow-worker", "1:5",
              args=reference["args"])
    run.wait_for(lambda: len(run.named("prep-worker")) == 2)
    at_random_point(run, rng, at_most=4)
    busy_worker(run).kill()
    assert_recovered_from_one_death(run, tmp_path / "out", reference)
    assert retried_tasks(tmp_path / "out") >= 1  # the kill cost a task an attempt: it landed on work


@pytest.mark.slow
def test_sigkill_a_starting_worker(corpus, reference, tmp_path):
    # Workers fork warm and start in milliseconds: a slow start leaves time to catch one starting.
    run = Run(corpus, tmp_path / "out", env={"PREP_DEBUG_FAULT": "start:slow"}, args=reference["args"])
    run.wait_for(lambda: run.named("prep-writer"))  # the writer starts first: what is unnamed now is a worker
    run.wait_for(lambda: run.starting_workers())
    run.starting_workers()[0].kill()
    assert_recovered_from_one_death(run, tmp_path / "out", reference)


@pytest.mark.slow
def test_sigkill_workers_again_and_again(corpus, reference, tmp_path):
    """A ready worker is killed about a dozen times, at random moments, until the run ends."""
    rng = random.Random(7)
    # Slowed workers (they sleep after each task) make the run last long enough for many kills on a fast machine.
    run = Run(corpus, tmp_path / "out", "--debug-slow-worker", "0:5", "--debug-slow-worker", "1:5",
              args=reference["args"])
    kills = 0
    # About a dozen kills over the run, however fast the machine: kills much closer than a task lasts would keep
    # hitting the retried task at the head of the queue, and three hits on one document quarantine it by design.
    interval = max(0.2, 5 * reference["wall_s"] / 12)
    while run.proc.poll() is None:
        time.sleep(rng.uniform(0.5, 1.5) * interval)
        ready = run.named("prep-worker")
        if ready:
            with contextlib.suppress(psutil.NoSuchProcess):
                rng.choice(ready).kill()
                kills += 1
    rc, out, err = run.wait()
    assert rc == 0, err
    assert kills >= 4
    assert_clean(run)
    assert_same_or_killed_thrice(tmp_path / "out", reference, corpus)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert sum(w["restarts"] for w in manifest["routing"]["workers"]) >= kills - 2  # the last may hit the end


def committed_files(run: Run) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every shard the journal lists as committed now."""
    files = {}
    for entry in run.committed_entries():
        if entry.get("file"):
            st = (run.out / entry["file"]).stat()
            files[entry["file"]] = (st.st_ino, st.st_mtime_ns)
    return files


def assert_not_rewritten(out: Path, files: dict[str, tuple[int, int]]) -> None:
    """What was committed before a fault is the very file it was: not written again."""
    for name, ident in files.items():
        st = (out / name).stat()
        assert (st.st_ino, st.st_mtime_ns) == ident, name


def writer_restarts(out: Path) -> int:
    return json.loads((out / "_manifest.json").read_text())["routing"]["writer_restarts"]


@pytest.mark.parametrize("role", ["writer", "forkserver"])
def test_sigkill_the_writer_or_the_forkserver_is_survived(corpus, reference, tmp_path, role):
    """Killed after a shard was committed: a new writer continues from the journal and only what was not
    committed is computed again. The forkserver takes the writer and every worker with it (they die with their
    parent): it is started again, and so are they."""
    out = tmp_path / "out"
    run = Run(corpus, out, args=reference["args"])
    run.wait_for(lambda: run.committed() >= 1 and run.named("prep-writer") and len(run.named("prep-worker")) == 2)
    victim = run.named("prep-writer")[0] if role == "writer" else run.role("multiprocessing.forkserver")[0]
    committed = committed_files(run)
    victim.kill()
    rc, stdout, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    assert_same(out, reference)
    assert_not_rewritten(out, committed)
    assert 1 <= len(committed) < len(reference["shards"])  # the kill landed mid-run, after a commit
    assert writer_restarts(out) >= 1  # one death; a replacement dying in its start counts once more
    workers = json.loads((out / "_manifest.json").read_text())["routing"]["workers"]
    restarts = sum(w["restarts"] for w in workers)
    # The forkserver's death takes both workers with it; a replacement started while the new forkserver comes
    # up may die in its start too (counted as one more restart), so at least two.
    assert restarts >= 2 if role == "forkserver" else restarts == 0
    assert "faults survived" in stdout
    if role == "writer":  # chunks whose results went to the dead writer were cut again from the input
        reread = re.search(r"(\d+) chunk\(s\) read again from the input", stdout)
        assert reread and int(reread.group(1)) >= 1, stdout


def test_sigkill_the_resource_tracker_is_survived(corpus, reference, tmp_path):
    """Nothing of a run is tracked by it (segments are untracked): the run goes on, and the next process started
    (here a worker replaced after a kill) starts a new one without a word of warning."""
    out = tmp_path / "out"
    run = Run(corpus, out, args=reference["args"])
    run.wait_for(lambda: run.committed() >= 1 and len(run.named("prep-worker")) == 2)
    tracker = run.role("multiprocessing.resource_tracker")
    assert len(tracker) == 1
    tracker[0].kill()
    busy_worker(run).kill()
    run.wait_for(lambda: run.role("multiprocessing.resource_tracker"))  # replaced, with the worker
    assert_recovered_from_one_death(run, out, reference)
    assert "Warning" not in run.output()[1], run.output()[1]


@pytest.mark.slow
def test_a_new_writer_gets_the_bad_records_again(tmp_path):
    """Bad records met by the reader and a poison document quarantined by the stage, in a shard not yet
    committed when the writer dies: the new writer gets them again, and the quarantine equals an undisturbed
    run's, line for line."""
    docs = corpus_docs("en_fortunes", 1500)
    docs[700] = dict(docs[700], text=docs[700]["text"] + " POISON")  # in the second of ~5 shards
    path = write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"id": "broken", "text": \n{"id": "no-text"}\n')
    extra = ("--shard-bytes", "64KiB", "--debug-slow-worker", "0:3", "--debug-slow-worker", "1:3")
    env = {"PREP_DEBUG_FAULT": "raise:POISON"}
    ref = Run(tmp_path / "in", tmp_path / "ref", *extra, env=env)
    assert ref.wait()[0] == 0
    out = tmp_path / "out"
    run = Run(tmp_path / "in", out, *extra, env=env)
    run.wait_for(lambda: run.committed() >= 1 and run.named("prep-writer"))
    committed = committed_files(run)
    run.named("prep-writer")[0].kill()
    rc, _, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    assert_same(out, snapshot(tmp_path / "ref"))
    assert_not_rewritten(out, committed)
    assert writer_restarts(out) >= 1  # one death; a replacement dying in its start counts once more
    reasons = [json.loads(line)["reason"] for line in (out / "_quarantine.jsonl").read_text().splitlines()]
    assert len(reasons) == 3 and reasons[0].startswith("exception: RuntimeError: injected fault"), reasons


@pytest.mark.slow
@pytest.mark.parametrize("role, seed", [("writer", 3), ("writer", 5), ("forkserver", 3), ("forkserver", 8)])
def test_sigkill_the_writer_or_the_forkserver_at_a_random_point(corpus, reference, tmp_path, role, seed):
    """At any moment, start-up and the last shard and manifest included."""
    rng = random.Random(seed)
    out = tmp_path / "out"
    run = Run(corpus, out, args=reference["args"])
    run.wait_for(lambda: run.named("prep-writer"))
    at_random_point(run, rng, at_most=7)
    committed = committed_files(run)
    victim = run.named("prep-writer") if role == "writer" else run.role("multiprocessing.forkserver")
    assert victim and run.proc.poll() is None, "the run ended before the kill"
    victim[0].kill()
    rc, _, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    assert_same(out, reference)
    assert_not_rewritten(out, committed)
    assert writer_restarts(out) >= 1  # one death; a replacement dying in its start counts once more


@pytest.mark.slow
def test_a_writer_that_keeps_dying_stops_the_run_then_resume(corpus, reference, tmp_path):
    """Every new writer is killed before it can commit: after three deaths in a row the run stops in one line,
    keeping what was committed, and --resume finishes it."""
    out = tmp_path / "out"
    run = Run(corpus, out, "--debug-slow-worker", "0:5", "--debug-slow-worker", "1:5", args=reference["args"])
    run.wait_for(lambda: run.committed() >= 1)
    killed: set[int] = set()
    while run.proc.poll() is None:
        for writer in run.named("prep-writer"):
            if writer.pid not in killed:
                killed.add(writer.pid)
                writer.kill()
        time.sleep(0.005)
    rc, _, err = run.wait()
    assert rc == 1, err
    assert_one_clear_line(err, "the writer keeps dying (3 times with no shard committed", "--resume")
    assert len(killed) == 3
    assert_clean(run)
    assert_committed_intact(out)
    resume(corpus, out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed, workers_after", [(19, 2), (14, 1), (13, 3), (16, 2), (11, 1)])
def test_sigkill_the_coordinator_at_a_random_point_then_resume(corpus, reference, tmp_path, seed, workers_after):
    """The worst case: nothing is cleaned up. The children die with the coordinator, the next run removes its
    segments and temp files, and the resumed output (with another --workers too) is the same. The kill lands
    after at least one commit (on a fast run maybe after the last, before the manifest), and what was committed
    is neither computed nor written again."""
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    out = tmp_path / "out"
    run = Run(corpus, out, args=reference["args"])
    where = at_random_point(run, rng, at_least=1)
    committed = committed_files(run)
    assert committed and run.proc.poll() is None, f"the run ended before the kill ({where})"
    run.kill()
    run.assert_no_process_left()
    if (out / "_manifest.json").exists():  # killed on its way out: finished, and it says so
        assert_same(out, reference)
        proc = prep_cmd("run", "--input", corpus, "--output", out, *reference["args"], "--resume")
        assert "holds a finished run" in proc.stderr
        return
    entries = assert_committed_intact(out)
    got = resume(corpus, out, reference, workers=workers_after)
    assert_not_rewritten(out, committed)
    seqs = pq.read_table(out / "_routing.parquet").column("seq").to_pylist()
    assert all(s > entries[-1]["last_seq"] for s in seqs)  # what was committed is not computed again
    assert seqs or len(entries) == len(reference["shards"])  # nothing computed only if all was committed
    assert got["counts"] == reference["counts"]


@pytest.mark.slow
def test_sigkill_the_coordinator_twice_during_resume(corpus, reference, tmp_path):
    """Killed, resumed at once (its writer must not commit behind the new run's back), killed again, resumed."""
    out = tmp_path / "out"
    killed = []
    for extra in ((), ("--resume",)):
        run = Run(corpus, out, *extra, args=reference["args"])
        target = run.committed() + 2
        run.wait_for(lambda target=target, run=run: run.committed() >= target)
        run.kill()
        killed.append(run)
    resume(corpus, out, reference, workers=1)
    for run in killed:
        run.assert_no_process_left()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT-group", "SIGTERM-group"])
def test_interrupt_then_resume(corpus, reference, tmp_path, how):
    """Ctrl-C in a terminal signals the whole process group; `kill` signals the coordinator alone."""
    out = tmp_path / "out"
    run = Run(corpus, out, args=reference["args"])
    run.wait_for(lambda: run.committed() >= 1)
    signum = signal.Signals[how.split("-")[0]]
    run.watch()
    if how.endswith("group"):
        os.killpg(run.proc.pid, signum)
    else:
        run.proc.send_signal(signum)
    rc, _, err = run.wait()
    assert rc == 128 + signum, err
    assert_one_clear_line(err, f"interrupted ({signum.name})", "--resume")
    assert_clean(run)
    assert_committed_intact(out)
    resume(corpus, out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("fault, reason", [("kill", "worker killed by signal SIGKILL"),
                                           ("raise", "exception: RuntimeError: injected fault"),
                                           ("hang", "timeout: no result after 1 s")])
def test_poison_documents_in_a_multi_file_corpus(tmp_path, fault, reason):
    """Two poison documents in different files, among ~50 chunks: both isolated, the rest identical to a run
    without them."""
    a, b = corpus_docs("en_fortunes", 1200), corpus_docs("zh_poetry", 1200)
    bad_a, bad_b = dict(a[1034], text=a[1034]["text"] + " POISON"), dict(b[77], text="POISON " + b[77]["text"])
    write_jsonl(tmp_path / "clean" / "a.jsonl", a[:1034] + a[1035:])
    write_jsonl(tmp_path / "clean" / "b.jsonl", b[:77] + b[78:])
    write_jsonl(tmp_path / "bad" / "a.jsonl", a[:1034] + [bad_a] + a[1035:])
    write_jsonl(tmp_path / "bad" / "b.jsonl", b[:77] + [bad_b] + b[78:])
    extra = (*ONE_SHARD, "--chunk-timeout", "1") if fault == "hang" else ONE_SHARD
    args = (*ARGS[:4], "--chunk-bytes", "4KiB", "--no-progress") if fault == "hang" else ARGS
    ref = Run(tmp_path / "clean", tmp_path / "ref", *extra, args=args)
    assert ref.wait()[0] == 0
    run = Run(tmp_path / "bad", tmp_path / "out", *extra, args=args, env={"PREP_DEBUG_FAULT": f"{fault}:POISON"})
    rc, _, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    assert shard_bytes_of(tmp_path / "out") == shard_bytes_of(tmp_path / "ref")
    quarantine = [json.loads(line) for line in (tmp_path / "out" / "_quarantine.jsonl").read_text().splitlines()]
    assert [(q["file"], q["line"], q["position"]) for q in quarantine] == [("a.jsonl", 1035, 1035), ("b.jsonl", 78, 78)]
    assert all(q["reason"].startswith(reason) for q in quarantine), quarantine
    counts = json.loads((tmp_path / "out" / "_manifest.json").read_text())["counts"]
    assert counts["documents_in"] == 2400 and counts["quarantined"] == 2
    assert counts["documents_in"] == counts["documents_out"] + counts["quarantined"] + counts["filtered"]


@pytest.mark.slow
def test_strict_makes_a_poison_document_an_error(tmp_path):
    docs = corpus_docs("en_fortunes", 200)
    docs[50] = dict(docs[50], text=docs[50]["text"] + " POISON")
    write_jsonl(tmp_path / "in.jsonl", docs)
    run = Run(tmp_path / "in.jsonl", tmp_path / "out", "--strict", env={"PREP_DEBUG_FAULT": "raise:POISON"})
    rc, _, err = run.wait()
    assert rc == 2, err
    assert_one_clear_line(err, f"in.jsonl, document {docs[50]['id']}", "injected fault", "strict mode")
    assert_clean(run)


@pytest.mark.slow
def test_hung_worker_dies_with_a_killed_coordinator_and_leftovers_are_cleaned(corpus, reference, tmp_path):
    """A worker stuck in a document does not read its pipe: it must still die with the coordinator. The
    segments and temp files of the killed run are removed by the next run in that directory."""
    out = tmp_path / "out"
    run = Run(corpus, out, "--chunk-timeout", "600", args=reference["args"],
              env={"PREP_DEBUG_FAULT": "hang:月"})  # all of b.jsonl
    run.wait_for(lambda: run.committed() >= 2)
    time.sleep(1.0)
    assert run.proc.poll() is None
    run.kill()
    run.assert_no_process_left()
    (out / ".part-00077-train.parquet.tmp").write_bytes(b"PAR1 half a shard")
    leftovers = segments(run)
    assert leftovers, "a SIGKILLed coordinator leaves its segments"
    assert (out / SHM_RECORD).read_text().strip() + "in" in leftovers  # and the record that names them
    resume(corpus, out, reference)
    assert segments(run) == []


@pytest.mark.slow
def test_disk_full_then_resume(corpus, reference, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "out"
        run = Run(corpus, out, args=reference["args"])
        rc, _, err = run.wait()
        assert rc == 1, err
        assert_one_clear_line(err, "cannot write the output: No space left on device", "--resume")
        assert_clean(run)
        assert len(assert_committed_intact(out)) >= 1
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resume(corpus, out, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_permission_denied_at_start_and_mid_run(corpus, reference, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    run = Run(corpus, locked / "out", permissions=True, args=reference["args"])
    rc, _, err = run.wait()
    assert rc == 2, err
    assert_one_clear_line(err, "cannot create output directory", "Permission denied")

    out = tmp_path / "out"
    run = Run(corpus, out, permissions=True, args=reference["args"])
    run.wait_for(lambda: run.committed() >= 1)
    out.chmod(0o555)
    rc, _, err = run.wait()
    out.chmod(0o755)
    assert rc == 1, err
    assert_one_clear_line(err, "cannot write the output: Permission denied", "--resume")
    assert_clean(run, writable=False)
    assert_committed_intact(out)
    resume(corpus, out, reference)  # which leaves no temp file (assert_clean)


@pytest.mark.slow
@pytest.mark.parametrize("fault, reason", [("kill", "worker killed by signal SIGKILL"),
                                           ("raise", "exception: RuntimeError: injected fault")])
def test_poison_documents_in_parquet_dataset_and_txt_pieces(tmp_path, fault, reason):
    """Pieces read by the workers are bisected like parsed rows: a poison row of a Parquet file or a dataset
    and a poison .txt file are isolated at their file and row, read again by the coordinator for the record,
    and every other document is written, in order."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = corpus_docs("en_fortunes", 900)
    texts = [d["text"] + (" POISON" if i in (333, 611) else "") for i, d in enumerate(docs)]
    table = pa.table({"id": [d["id"] for d in docs], "text": texts})
    root = tmp_path / "in"
    root.mkdir()
    pq.write_table(table.slice(0, 500), root / "a.parquet", row_group_size=64)
    datasets.Dataset(table.slice(500, 380)).save_to_disk(str(root / "b_saved"))
    (root / "c").mkdir()
    for i, text in enumerate(texts[880:]):
        (root / "c" / f"{i:02d}.txt").write_text(text)
    (root / "c" / "poison.txt").write_text("POISON " + texts[5])
    run = Run(root, tmp_path / "out", *ONE_SHARD, env={"PREP_DEBUG_FAULT": f"{fault}:POISON"})
    rc, _, err = run.wait()
    assert rc == 0, err
    assert_clean(run)
    quarantine = [json.loads(line) for line in (tmp_path / "out" / "_quarantine.jsonl").read_text().splitlines()]
    assert [(q["file"], q["row"]) for q in quarantine] == [("a.parquet", 333), ("b_saved", 611 - 500),
                                                            ("c/poison.txt", 0)]
    assert all(q["reason"].startswith(reason) and "POISON" in q["raw"] for q in quarantine), quarantine
    written = pq.read_table(tmp_path / "out", columns=["id"]).column("id").to_pylist()
    expected = [d["id"] for i, d in enumerate(docs[:880]) if i not in (333, 611) and d["text"].strip()]
    assert written == expected + [f"c/{i:02d}.txt" for i in range(20) if texts[880 + i].strip()]
    counts = json.loads((tmp_path / "out" / "_manifest.json").read_text())["counts"]
    assert counts["quarantined"] == 3
    assert counts["documents_in"] == counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    if fault == "raise":
        strict = Run(root, tmp_path / "strict", "--strict", env={"PREP_DEBUG_FAULT": "raise:POISON"})
        rc, _, err = strict.wait()
        assert rc == 2, err
        assert_one_clear_line(err, "injected fault", "strict")
        # whichever worker meets its poison record first ends the run: one of the three, named by file and row
        named = [f"a.parquet, document {docs[333]['id']} (row 333)", f"b_saved, document {docs[611]['id']} (row 111)",
                 "c/poison.txt"]
        assert [n for n in named if n in err.strip().splitlines()[-1]] in ([n] for n in named), err


def test_a_chunk_let_go_is_read_again_from_the_input(tmp_path):
    """The coordinator lets a chunk's input go once every result is out; after a writer's death it cuts the input
    again and takes the same chunk, proved by its digest, in whatever order asked. An input changed meanwhile
    stops the run in one line."""
    from types import SimpleNamespace

    from prep.engines.local.coordinator import LocalEngine
    from prep.errors import RunFailed
    from prep.io.records import raw_data
    from prep.io.sources import expand_inputs, iter_chunks
    from prep.io.verify import chunk_digest

    path = write_jsonl(tmp_path / "in" / "a.jsonl", corpus_docs("en_fortunes", 400))
    files = expand_inputs([str(path)])

    def cut():
        return iter_chunks(files, chunk_bytes=8192, raw=True)

    original = list(cut())
    assert len(original) >= 6
    engine = SimpleNamespace(replay=lambda seq: itertools.dropwhile(lambda c: c.seq < seq, cut()), _replay=None,
                             _replay_next=0, kept={c.seq: SimpleNamespace(info={"digest": chunk_digest(c),
                                                                                 "source": c.source})
                                                   for c in original})
    for seq in (2, 5, 1):  # forward, then back: a new pass over the input
        again = LocalEngine._reread(engine, seq)
        assert again.seq == seq and raw_data(again.batch) == raw_data(original[seq].batch)
    docs = corpus_docs("en_fortunes", 400)
    docs[1] = dict(docs[1], text=docs[1]["text"] + " changed")
    write_jsonl(path, docs)
    engine._replay = None
    with pytest.raises(RunFailed, match=r"^the input changed while prep ran: chunk 0 \(a.jsonl\)"):
        LocalEngine._reread(engine, 0)


def test_the_coordinators_memory_stays_flat_in_the_input_size(tmp_path):
    """One shard for all the input (nothing committed before the end): the coordinator does not hold it."""
    peaks = {}
    for copies in (1, 8):
        docs = corpus_docs("en_gutenberg_nltk", 60) * copies  # ~0.9 MiB a copy
        inp = write_jsonl(tmp_path / f"in{copies}" / "a.jsonl", [dict(d, id=f"{i}") for i, d in enumerate(docs)])
        out = tmp_path / f"out{copies}"
        done = prep_cmd("run", "--input", inp, "--output", out, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "1",
                        "--features", "none", "--shard-bytes", "1GiB", "--chunk-bytes", "64KiB")
        assert done.returncode == 0, done.stderr
        manifest = json.loads((out / "_manifest.json").read_text())
        peaks[copies] = (manifest["timings"]["coordinator_peak_rss_mb"], manifest["counts"]["bytes_in"] / 2**20)
    (small, small_mib), (big, big_mib) = peaks[1], peaks[8]
    assert big_mib - small_mib > 4, peaks  # the larger input is larger by several MiB
    assert big - small < 0.5 * (big_mib - small_mib), peaks  # holding the input grew it by at least as much
