"""`prep run` end to end: exact ids, byte-identical shards, accounting, clean exits."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import (
    BERT_ZH,
    GPT2,
    SAMPLE,
    SAMPLE_TOKENIZER,
    corpus_docs,
    orphan_segments,
    prep_cmd,
    shard_bytes_of,
    shm_segments,
    write_jsonl,
    write_piece_inputs,
)
from scipy.stats import chisquare
from tokenizers import Tokenizer


def run_ok(*args) -> dict:
    prep_cmd("run", *args, "--no-progress", check=True)
    out = Path(args[args.index("--output") + 1])
    return json.loads((out / "_manifest.json").read_text())


def read_rows(out: Path) -> list[dict]:
    return pq.read_table(out).to_pylist() if list(out.glob("part-*.parquet")) else []


@pytest.mark.parametrize("tokenizer", [GPT2, BERT_ZH], ids=["gpt2", "bert-base-chinese"])
def test_token_ids_equal_direct_encode(tmp_path, tokenizer):
    docs = corpus_docs("en_devils_dictionary", 150) + corpus_docs("zh_wiki_cmrc2018", 60) + corpus_docs(
        "code_python_stdlib", 5)
    write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    manifest = run_ok("--input", tmp_path / "in.jsonl", "--output", out, "--tokenizer", tokenizer,
                      "--workers", "2", "--chunk-bytes", "64KiB", "--backend", "tokenizers")
    reference = Tokenizer.from_file(str(tokenizer))
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    expected = {d["id"]: d for d in docs if d["text"].strip()}
    assert set(rows) == set(expected)
    for doc_id, doc in expected.items():
        ids = reference.encode(doc["text"]).ids
        assert rows[doc_id]["input_ids"] == ids, doc_id
        assert rows[doc_id]["num_tokens"] == len(ids)
    # ../shared/tokenizers/README.md (1.x has no get_vocab_size to ask)
    assert manifest["tokenizer"]["vocab_size"] == {GPT2: 50257, BERT_ZH: 21128}[tokenizer]
    assert pq.read_schema(next(out.glob("part-*.parquet"))).field("input_ids").type.value_type == "uint32"


def test_features_none_writes_the_token_columns_only(tmp_path):
    """`--features none`: id, input_ids and num_tokens, the ids those of a direct encode (the workers then need no
    compiled code: see test_features' test of `uses_compiled_code`)."""
    docs = corpus_docs("en_devils_dictionary", 40)
    write_jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    run_ok("--input", tmp_path / "in.jsonl", "--output", out, "--tokenizer", GPT2, "--workers", "2",
           "--features", "none", "--backend", "tokenizers")
    table = pq.read_table(out)
    assert table.column_names == ["id", "input_ids", "num_tokens"]
    reference = Tokenizer.from_file(str(GPT2))
    expected = {d["id"]: reference.encode(d["text"]).ids for d in docs if d["text"].strip()}
    assert {r["id"]: r["input_ids"] for r in table.to_pylist()} == expected
    both = prep_cmd("run", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "o2", "--tokenizer", GPT2,
                    "--features", "none,num_chars", "--no-progress")
    assert both.returncode == 2
    assert both.stderr.strip() == "prep: error: features: 'none' cannot go with others (num_chars)"


def test_shards_byte_identical_across_workers_seeds_routers(tmp_path, mixed_corpus):
    outputs = {}
    runs = [(1, 0, "random"), (2, 0, "p2c"), (3, 7, "random"), (2, 3, "round-robin"), (3, 1, "weighted")]
    for workers, seed, router in runs:
        out = tmp_path / f"out-{workers}-{seed}-{router}"
        run_ok("--input", mixed_corpus, "--output", out, "--tokenizer", GPT2, "--workers", str(workers),
               "--seed", str(seed), "--router", router, "--chunk-bytes", "32KiB", "--shard-bytes", "100KiB")
        outputs[(workers, seed, router)] = shard_bytes_of(out)
    first = next(iter(outputs.values()))
    assert len(first) >= 3, "the test needs several shards"
    for key, shards in outputs.items():
        assert shards == first, key


def test_sample_data_accounting_and_datasets_load(tmp_path):
    out = tmp_path / "out"
    manifest = run_ok("--input", SAMPLE / "corpus", "--output", out, "--tokenizer", SAMPLE_TOKENIZER,
                      "--workers", "2")
    counts = manifest["counts"]
    assert counts["quarantined"] > 0 and counts["filtered"] > 0
    assert counts["documents_in"] == counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    quarantine = [json.loads(line) for line in (out / "_quarantine.jsonl").read_text().splitlines()]
    assert len(quarantine) == counts["quarantined"]
    assert all({"source", "position", "reason", "raw"} <= set(q) for q in quarantine)
    assert sum(s["rows"] for s in manifest["shards"]) == counts["documents_out"]
    timings = manifest["timings"]  # the engine's own CPU, which `prep bench` reports apart from start and finish
    assert timings["coordinator_cpu_s"] > 0 and 0 < timings["writer_cpu_s"] < timings["wall_s"] * 4
    # where the run waited: the coordinator within the engine's time, the writer's main thread within its CPU
    assert 0 <= timings["coordinator_waiting_s"] <= timings["wall_s"]
    assert 0 < timings["writer_main_cpu_s"] <= timings["writer_cpu_s"] and timings["writer_waiting_s"] >= 0
    assert 30 < timings["coordinator_peak_rss_mb"] < 4000
    from prep.tools.summary import format_summary

    assert (f"coordinator    CPU {timings['coordinator_cpu_s']:.2f} s, waited {timings['coordinator_waiting_s']:.2f} s"
            in format_summary(manifest))

    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert len(ds) == counts["documents_out"]
    assert sum(ds["num_tokens"]) == counts["tokens"]


def test_broken_records_accounting(tmp_path):
    path = tmp_path / "broken.jsonl"
    lines = [
        b'{"id": "ok1", "text": "fine"}',
        b'{"id": "bad-json", "text": "unterminated',
        b'{"id": "num", "text": 42}',
        b'{"id": "null", "text": null}',
        b'{"id": "missing"}',
        b'{"id": "utf8", "text": "\xff\xfe broken"}',
        b'{"id": "surrogate", "text": "\\ud800 lone"}',
        b'[1, 2, 3]',
        b'{"id": "empty", "text": ""}',
        b'{"id": "blank", "text": "   \\n\\t "}',
        b'{"id": "ok2", "text": "also fine"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    manifest = run_ok("--input", path, "--output", out, "--tokenizer", GPT2, "--workers", "2")
    counts = manifest["counts"]
    assert counts == counts | {"documents_in": 11, "documents_out": 2, "quarantined": 7, "filtered": 2}
    assert sorted(r["id"] for r in read_rows(out)) == ["ok1", "ok2"]
    positions = sorted(json.loads(q)["position"] for q in (out / "_quarantine.jsonl").read_text().splitlines())
    assert positions == [2, 3, 4, 5, 6, 7, 8]


def test_uniform_routing_is_uniform_and_seeded(tmp_path):
    docs = [{"id": str(i), "text": f"document {i} " * 20} for i in range(3000)]
    write_jsonl(tmp_path / "in.jsonl", docs)
    tables = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_ok("--input", tmp_path / "in.jsonl", "--output", out, "--tokenizer", GPT2, "--workers", "3",
               "--chunk-bytes", "1KiB", "--seed", "11", "--features", "num_chars", "--router", "random")
        tables.append(pq.read_table(out / "_routing.parquet").sort_by("seq"))
    workers = tables[0].column("worker").to_numpy()
    assert len(workers) >= 500
    counts = np.bincount(workers, minlength=3)
    assert chisquare(counts).pvalue > 0.001, counts
    assert tables[0].column("worker").equals(tables[1].column("worker"))


def test_no_segment_or_child_left(tmp_path, mixed_corpus):
    import psutil

    before = shm_segments()
    run_ok("--input", mixed_corpus, "--output", tmp_path / "out", "--tokenizer", GPT2, "--workers", "2")
    failed = prep_cmd("run", "--input", mixed_corpus, "--output", tmp_path / "out2", "--tokenizer", GPT2,
                      "--features", "no_such_feature")
    assert failed.returncode == 2
    assert orphan_segments(before) == set()
    assert psutil.Process().children(recursive=True) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "/no/such/file.jsonl"], "input not found"),
        (["--features", "nope"], "unknown feature"),
        (["--tokenizer", "/no/tokenizer.json"], "tokenizer file not found"),
        (["--text-field", "body"], "no field 'body'"),
        (["--chunk-bytes", "lots"], "bad chunk-bytes"),
        (["--router", "magic"], "unknown router"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, mixed_corpus, args, message):
    base = {"--input": str(mixed_corpus), "--output": str(tmp_path / "out"), "--tokenizer": str(GPT2)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    proc = prep_cmd("run", *[x for kv in base.items() for x in kv], "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_existing_output_needs_overwrite(tmp_path, mixed_corpus):
    out = tmp_path / "out"
    args = ["--input", mixed_corpus, "--output", out, "--workers", "1"]
    run_ok(*args, "--tokenizer", GPT2)
    gpt2_shards = shard_bytes_of(out)
    again = prep_cmd("run", *args, "--tokenizer", GPT2, "--no-progress")
    assert again.returncode == 2 and "already holds data" in again.stderr
    assert shard_bytes_of(out) == gpt2_shards
    (out / "notes.md").write_text("the user's")
    guarded = prep_cmd("run", *args, "--tokenizer", BERT_ZH, "--no-progress", "--overwrite")
    assert guarded.returncode == 2 and "notes.md" in guarded.stderr and (out / "notes.md").exists()
    (out / "notes.md").unlink()
    run_ok(*args, "--tokenizer", BERT_ZH, "--overwrite")  # replaced: other ids, the same documents
    rows = read_rows(out)
    bert = Tokenizer.from_file(str(BERT_ZH))
    texts = {d["id"]: d["text"] for d in read_docs(mixed_corpus)}
    assert sorted(r["id"] for r in rows) == sorted(texts)
    assert all(r["input_ids"] == bert.encode(texts[r["id"]]).ids for r in rows[:50])


def read_docs(directory: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(directory.glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_inspect(tmp_path, mixed_corpus):
    out = tmp_path / "out"
    run_ok("--input", mixed_corpus, "--output", out, "--tokenizer", GPT2, "--workers", "2", "--shard-bytes", "128KiB")
    rows = read_rows(out)  # what is on disk, counted here, not taken from the manifest
    files = sorted(out.glob("part-*.parquet"))
    assert len(files) >= 2
    text = prep_cmd("inspect", out, check=True).stdout
    assert f"{len(read_docs(mixed_corpus)):,}" in text and f"{len(rows):,}" in text
    assert "input_ids: list<element: uint32>" in text
    as_json = json.loads(prep_cmd("inspect", out, "--json", check=True).stdout)
    assert as_json["counts"]["documents_out"] == len(rows)
    assert as_json["counts"]["tokens"] == sum(len(r["input_ids"]) for r in rows)
    assert [s["file"] for s in as_json["shards"]] == [p.name for p in files]
    for shard, path in zip(as_json["shards"], files, strict=True):
        assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert shard["rows"] == pq.ParquetFile(path).metadata.num_rows
    missing = prep_cmd("inspect", tmp_path)
    assert missing.returncode == 2 and "no _manifest.json" in missing.stderr


def test_parquet_datasets_and_txt_pieces_byte_identical_across_workers_and_routers(tmp_path):
    """Pieces cut from metadata and read by the workers: every input row is written once, in input order,
    and the shards are the same bytes whatever the workers and router."""
    import datasets

    docs = corpus_docs("en_fortunes", 500) + corpus_docs("zh_poetry", 300)
    inputs = write_piece_inputs(tmp_path / "in", [d["id"] for d in docs], [d["text"] for d in docs], 450, 250, 40)
    outputs = {}
    for workers, router in ((1, "p2c"), (3, "random"), (3, "round-robin")):
        out = tmp_path / f"out-{workers}-{router}"
        run_ok("--input", inputs, "--output", out, "--tokenizer", GPT2, "--workers", str(workers), "--router", router,
               "--chunk-bytes", "16KiB", "--shard-bytes", "64KiB", "--features", "num_tokens")
        outputs[(workers, router)] = shard_bytes_of(out)
    first = next(iter(outputs.values()))
    assert len(first) >= 3, "the test needs several shards"
    assert all(shards == first for shards in outputs.values())
    # independently: pyarrow and datasets read the same rows, .txt files by name, in order
    expected = pq.read_table(inputs / "a.parquet").to_pylist()
    expected += datasets.load_from_disk(str(inputs / "b_saved")).to_list()
    expected += [{"id": f"c_txt/{p.name}", "text": p.read_text(encoding="utf-8")}
                 for p in sorted((inputs / "c_txt").iterdir())]
    written = read_rows(tmp_path / "out-3-random")
    assert [r["id"] for r in written] == [e["id"] for e in expected if e["text"].strip()]
    if "text" in written[0]:
        assert [r["text"] for r in written] == [e["text"] for e in expected if e["text"].strip()]


def test_a_slowed_worker_does_not_stop_the_intake(tmp_path):
    """Chunks are admitted up to four windows past the first one not yet written. While the slowed worker holds
    a chunk, the other takes chunks more than a window (8 with 2 workers) past it. Bound to one window, as
    before, no chunk was dispatched before every chunk a window or more before it had finished."""
    docs = [dict(d, id=f"d{i}") for i, d in enumerate(corpus_docs("en_fortunes", 3000))]
    inp = write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "out"
    run_ok("--input", inp, "--output", out, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2", "--router",
           "round-robin", "--chunk-bytes", "8KiB", "--debug-slow-worker", "1:20", "--features", "none")
    tasks = pq.read_table(out / "_routing.parquet").to_pylist()
    assert all(t["stop"] - t["start"] > 0 for t in tasks) and len({t["seq"] for t in tasks}) == len(tasks) > 40
    finished = {t["seq"]: t["finished_at"] for t in tasks}
    window = 8
    early = [t["seq"] for t in tasks
             if t["queued_at"] < max((f for s, f in finished.items() if s <= t["seq"] - window), default=-1.0)]
    assert early, "no chunk was admitted past a chunk a window before it that was still being computed"
    assert sorted(r["id"] for r in read_rows(out)) == sorted(d["id"] for d in docs)  # nothing lost or doubled


FORKSERVER_THREADS = """
import multiprocessing as mp
import os
from multiprocessing import forkserver

from prep.engines.local.forkserver import start_forkserver


def nothing():
    pass


if __name__ == "__main__":
    start_forkserver(("features", "rules"))
    child = mp.get_context("forkserver").Process(target=nothing)  # once a child ran, the preload is done
    child.start()
    child.join()
    tasks = f"/proc/{forkserver._forkserver._forkserver_pid}/task"
    names = sorted(open(f"{tasks}/{task}/comm").read().strip() for task in os.listdir(tasks))
    print("threads", *names, "child", child.exitcode)
"""


def test_the_forkserver_holds_no_thread_when_it_forks(tmp_path):
    """Every worker and writer is forked from the forkserver, so it must hold no thread whose locks a child could
    inherit held: e.g. a tokenizer loaded there starts tokenizers' rayon pool (1.x loads on it), and a worker
    forked after that hung at its next use of the pool (round 8's attempt at one tokenizer load per run). pyarrow's
    jemalloc keeps a background thread, which jemalloc's own fork handlers make safe."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(FORKSERVER_THREADS, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    threads = proc.stdout.split()
    assert threads[0] == "threads" and threads[-2:] == ["child", "0"]
    assert len([name for name in threads[1:-2] if name != "jemalloc_bg_thd"]) == 1, threads  # its main thread


EARLY_FORKSERVER = """
import multiprocessing as mp
import os
import sys
import time

from prep.engines.local import forkserver


def loaded():
    print(*(name in sys.modules for name in ("prep.text._kernels", "prep.text._feature_kernel", "typer")))


if __name__ == "__main__":
    forkserver.start_forkserver(early=True)
    first = forkserver._forkserver_pid()
    if sys.argv[2] == "unwritable":
        os.close(forkserver._choice_fd())  # the write fails
    if sys.argv[2] == "killed":  # told while it still imports, then the whole job is killed (by the test)
        forkserver.start_forkserver(("rules",))
        print("told", first, flush=True)
        time.sleep(60)
    time.sleep(float(sys.argv[1]))  # `prep run` parses its command line and reads the pipeline meanwhile
    forkserver.start_forkserver(("rules",))
    child = mp.get_context("forkserver").Process(target=loaded)
    child.start()
    child.join()
    ours = [name for name in os.listdir(os.environ["TMPDIR"]) if not name.startswith("pymp-")]  # multiprocessing's
    print("temp files", ours, "replaced", forkserver._forkserver_pid() != first)
"""


@pytest.mark.parametrize(("delay", "choice"), [(0.0, "written"), (2.0, "written"), (0.0, "unwritable")])
def test_a_forkserver_started_early_loads_the_compiled_code_it_is_told_later(tmp_path, delay, choice):
    """`prep run` starts its forkserver before its command line is parsed (prep.launch): the forkserver waits
    for the choice of compiled code after its other imports, then loads that (here the rules', not the
    features'), whether it is told before it gets there or after (2 s: it waits). The command line's typer is
    not in the children, and the choice left no file in the temp directory. Where the choice cannot be written,
    the waiting forkserver is replaced by one told at its start, which loads the same."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(EARLY_FORKSERVER, encoding="utf-8")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, str(script), str(delay), choice], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")))
    assert proc.returncode == 0, proc.stderr
    replaced = choice == "unwritable"
    assert proc.stdout.split("\n")[:2] == ["True False False", f"temp files [] replaced {replaced}"], proc.stdout


def test_a_job_killed_whole_while_its_forkserver_starts_leaves_no_file_behind(tmp_path):
    """A scheduler that ends a job SIGKILLs its whole process group, maybe while the early forkserver still imports
    and has not read the choice yet: nothing of it may stay in the temp directory (a named choice file did)."""
    import signal
    import subprocess
    import sys
    import time

    script, tmp = tmp_path / "script.py", tmp_path / "tmp"
    script.write_text(EARLY_FORKSERVER, encoding="utf-8")
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), "0.0", "killed"], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=dict(os.environ, TMPDIR=str(tmp)), start_new_session=True)
    told, pid = proc.stdout.readline().split()
    assert told == "told" and os.getpgid(int(pid)) == proc.pid  # its forkserver runs, in the job's group
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):  # reaped by init: gone
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")  # the fault landed on both
    assert [name for name in os.listdir(tmp) if not name.startswith("pymp-")] == []


def test_the_command_line_starts_a_forkserver_early_only_for_a_local_run(tmp_path, monkeypatch):
    """prep.launch's guess from the raw arguments; a process tells its own forkserver in an anonymous file of its
    own, not in one named in the environment it inherited (a test or tool that started `prep run` itself, then
    runs the command), and leaves no file in the temp directory, whatever becomes of its forkserver."""
    from prep.engines.local import forkserver
    from prep.launch import _local_run

    assert _local_run(["run", "--input", "x", "--output", "y"])
    assert _local_run(["run", "--engine", "local"]) and _local_run(["run", "--engine=local"])
    assert not _local_run(["run", "--engine", "ray"]) and not _local_run(["run", "--engine=ray"])
    assert not _local_run(["run", "--help"]) and not _local_run(["inspect", "out"]) and not _local_run([])
    inherited = tmp_path / "inherited"
    monkeypatch.setenv(forkserver.CHOICE_ENV, str(inherited))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(forkserver, "_choice", [None])
    monkeypatch.setattr(forkserver, "_told", [False])
    forkserver._tell(("features",))
    path = forkserver._choice_path()
    assert path != str(inherited) and not inherited.exists()
    with open(path, encoding="utf-8") as f:  # as the forkserver reads it
        assert f.read() == "features\n"
    monkeypatch.setenv(forkserver.CHOICE_ENV, path)
    assert forkserver.await_choice(timeout=1) == ("features",)
    os.close(forkserver._choice[0])  # as when its starter is gone: the forkserver stops waiting, told nothing
    assert forkserver.await_choice(timeout=5) == () and os.listdir(tmp_path / "tmp") == []
