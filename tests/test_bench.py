"""prep bench: inputs, the process-tree sampler, a tiny real bench, and the token check that flags a wrong answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from prep.text.hf import load_hf_tokenizer
from prep.tools import bench, bench_peers
from prep.tools.bench_peers import input_files, text_batches

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


def _tiny_options(tmp_path: Path, **kw) -> bench.BenchOptions:
    defaults = dict(corpus=SAMPLE / "corpus", mb=0.3, tokenizer=SAMPLE / "tokenizer.json", workers=1, repeats=1,
                    routers=("random",), backends=("tokenizers",), peers=(), workdir=tmp_path, keep=True,
                    timeout=120, log=lambda _line: None)
    return bench.BenchOptions(**(defaults | kw))


def test_text_batches_cut_where_the_bytes_reach_the_batch_size():
    texts = pa.chunked_array([["aé", "", "bbbb"], ["c" * 7, "dd", "中文"]])
    batches = text_batches(texts, 5)
    assert [t for b in batches for t in b] == texts.to_pylist()
    # a batch ends at the document that brings the running total to the next multiple of 5 bytes
    assert batches == [["aé", "", "bbbb"], ["c" * 7], ["dd"], ["中文"]]  # totals 7, 14, 16, 22


def test_slice_takes_the_same_fraction_of_every_file(tmp_path: Path):
    a = pa.table({"id": ["a0", "a1", "a2", "a3"], "text": ["x" * 100, "y" * 100, "z" * 100, "w" * 100]})
    b = pa.table({"id": ["b0", "b1"], "text": ["中" * 100, "文" * 100]})  # 300 bytes each
    corpus, taken = bench.make_slice([("a", a), ("b", b)], 500 / 1e6, tmp_path / "s")
    # 500 of 1000 bytes: half of each file, the document that crosses the half included
    assert [t.column("id").to_pylist() for t in taken] == [["a0", "a1"], ["b0"]]
    assert (corpus.text_bytes, corpus.documents, corpus.files) == (200 + 300, 3, 2)
    lines = [json.loads(line) for f in input_files(tmp_path / "s") for line in f.open(encoding="utf-8")]
    assert [d["id"] for d in lines] == ["a0", "a1", "b0"] and lines[2]["text"] == "中" * 100


def test_tiny_and_huge_documents(tmp_path: Path):
    t = pa.table({"id": ["0", "1"], "text": ["one\n\n  two  \n" + "x" * 300, "three\nfour"]})
    tiny = bench.make_tiny([("t", t)], 10, tmp_path / "tiny")
    docs = [json.loads(line) for line in (tmp_path / "tiny" / "tiny.jsonl").open(encoding="utf-8")]
    assert tiny.documents == 10 and len(docs) == 10
    assert {d["text"] for d in docs} == {"one", "two", "three", "four"}  # trimmed, non-empty, <= 200 bytes
    huge = bench.make_huge([t], 0.001, tmp_path / "huge")
    [doc] = [json.loads(line) for line in (tmp_path / "huge" / "huge.jsonl").open(encoding="utf-8")]
    assert huge.documents == 1 and huge.text_bytes == len(doc["text"].encode()) == 1000
    assert doc["text"].startswith("one\n\n  two  \n" + "x" * 300 + "\n\nthree\nfour")


def test_scaling_table_runs_powers_of_two_then_n():
    variants = bench.plan(["main"], ["tokenizers"], ["random", "p2c"], [], 16, 4)
    assert [v.workers for v in variants if v.kind == "prep" and not v.formats and v.features is None] == [
        1, 2, 4, 8, 16, 16]
    assert bench.scaling_workers(6) == [1, 2, 4] and bench.scaling_workers(1) == []


def test_plan_covers_workers_routers_backends_peers_and_scenarios():
    variants = bench.plan(["main", "memory", "tiny"], ["tokenizers", "tiktoken"], ["random", "p2c"], ["pool"], 2, 4)
    names = [v.name for v in variants]
    assert len(names) == len(set(names))
    assert names[:13] == ["ceiling tokenizers 1 thread", "ceiling tokenizers 2 processes",
                          "pipeline tokenizers 1 process", "pipeline tokenizers 2 processes",
                          "ceiling tiktoken 1 thread", "ceiling tiktoken 2 processes",
                          "pipeline tiktoken 1 process", "pipeline tiktoken 2 processes",
                          "prep tokenizers w1 random", "prep tokenizers w2 random",
                          "prep tokenizers w2 p2c", "prep tiktoken w1 random", "prep tiktoken w2 random"]
    assert [(v.kind, v.workers) for v in variants if v.name.startswith("pipeline tokenizers")] == [
        ("pipeline", 1), ("pipeline", 2)]
    scaled = [v for v in variants if v.corpus == "scaled"]
    assert [(v.name, v.scale, v.reference, v.workers) for v in scaled] == [
        ("prep tokenizers w2 random x4", 4, "main", 2), ("prep tiktoken w2 random x4", 4, "main", 2)]
    assert {v.name for v in variants if v.scenario == "tiny"} == {
        "ceiling tokenizers 1 thread tiny", "ceiling tiktoken 1 thread tiny", "prep tokenizers w2 random tiny",
        "prep tiktoken w2 random tiny"}
    assert [(v.peer, v.workers) for v in variants if v.kind == "peer"] == [("pool", 2)]
    assert [(v.name, v.formats) for v in variants if v.formats] == [
        ("prep tokenizers w2 random +megatron+llmc", ("megatron", "llmc"))]
    assert [(v.name, v.features) for v in variants if v.features] == [
        ("prep tokenizers w2 random --features none", "none")]


def test_the_default_router_leads_so_the_scaling_rows_and_targets_measure_it():
    """The first router runs at 1, 2, 4, .. workers and gives the target rows: by default, `prep run`'s own."""
    from prep.config import PipelineConfig

    assert bench.BenchOptions().routers[0] == PipelineConfig().router == "p2c"
    assert sorted(bench.BenchOptions().routers) == sorted(("random", "p2c", "weighted", "round-robin"))
    names = [v.name for v in bench.plan(["main"], ["tokenizers"], list(bench.BenchOptions().routers), [], 4, 4)]
    assert [n for n in names if n.startswith("prep") and " w4 " not in n and "+" not in n] == [
        "prep tokenizers w1 p2c", "prep tokenizers w2 p2c"]


def test_measure_sums_memory_over_the_process_tree():
    code = ("import subprocess, sys, time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "subprocess.run([sys.executable, '-c', \"b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]);"
            " import time; time.sleep(0.6)\"])")
    m = bench.measure([sys.executable, "-c", code], bench._env(1), timeout=30)
    assert m.returncode == 0
    assert m.peak_rss_mb > 300  # both processes' 150 MB, summed
    assert m.cpu_s["main"] > 0 and "child" in m.cpu_s
    assert m.peak_rss_by_role_mb["main"] > 150 and m.peak_rss_by_role_mb["child"] > 150


def test_tiny_bench_checks_tokens_and_computes_fractions(tmp_path: Path, monkeypatch):
    # Workers fork warm and a tiny run is over in a blink: a slow start makes sure the sampler sees every role.
    monkeypatch.setenv("PREP_DEBUG_FAULT", "start:slow")
    result = bench.run_bench(_tiny_options(tmp_path, workers=2, peers=("pool", "pool-batch")))
    assert set(result) >= {"machine", "options", "corpora", "ceilings", "variants", "problems", "notes", "targets"}
    assert result["problems"] == []
    names = [v["name"] for v in result["variants"]]
    assert names == ["ceiling tokenizers 1 thread", "ceiling tokenizers 2 processes", "pipeline tokenizers 1 process",
                     "pipeline tokenizers 2 processes", "prep tokenizers w1 random", "prep tokenizers w2 random",
                     "prep tokenizers w2 random +megatron+llmc", "prep tokenizers w2 random --features none", "pool w2",
                     "pool-batch w2"]
    cost = result["variants"][6]["summary"]["vs_parquet_only"]  # the same run writing the binary formats too
    assert cost["base"] == "prep tokenizers w2 random" and cost["speed_ratio"] > 0 and cost["cpu_ratio"] > 0
    # the reference: tokenizers' own ids of the slice, document by document
    hf = load_hf_tokenizer(SAMPLE / "tokenizer.json")
    slice_dir = Path(result["corpora"]["main"]["path"])
    texts = [json.loads(line)["text"] for f in input_files(slice_dir) for line in f.open(encoding="utf-8")]
    expected = sum(len(hf.encode(t).ids) for t in texts)
    assert result["corpora"]["main"]["text_bytes"] == sum(len(t.encode()) for t in texts) >= 0.3e6
    ceiling = result["ceilings"]["main"]["tokenizers"]
    assert ceiling["tokens"] == expected
    by_name = {v["name"]: v for v in result["variants"]}
    for v in result["variants"]:
        s = v["summary"]
        assert s["tokens"] == s["tokens_expected"] == expected and s["tokens_ok"] is True
        speed = s["mb_s"]["median"]
        assert s["fraction_of_ceiling"]["median"] == pytest.approx(speed / (v["workers"] * ceiling["mb_s"]))
        if v["workers"] == 2 and v["kind"] != "ceiling":
            assert s["fraction_of_parallel_ceiling"]["median"] == pytest.approx(speed / ceiling["processes_2_mb_s"])
        if v["kind"] in ("prep", "peer"):  # against the pipeline ceiling: one of them, or 2 at once
            pipelines = ceiling["pipeline_mb_s"] if v["workers"] == 1 else ceiling["pipeline_processes_2_mb_s"]
            assert s["fraction_of_parallel_pipelines"]["median"] == pytest.approx(speed / pipelines)
        assert s["peak_rss_mb"] > 0 and s["mb_s"]["n"] == 1
        if v["kind"] != "ceiling":
            assert s["cpu_efficiency"]["median"] == pytest.approx(
                result["corpora"]["main"]["text_bytes"] / 1e6 / ceiling["cpu_mb_s"] / s["cpu_total_s"]["median"])
    prep2 = by_name["prep tokenizers w2 random"]["summary"]
    assert len(prep2["workers"]) == 2 and set(prep2["workers"][0]) >= {"busy_s", "tokenize_s", "features_s",
                                                                       "transport_s", "idle_s", "queue_wait_s"}
    assert {"coordinator", "writer", "worker"} <= set(prep2["cpu_s"])
    assert prep2["vs_peers"]["pool"] == pytest.approx(
        prep2["mb_s"]["median"] / by_name["pool w2"]["summary"]["mb_s"]["median"])
    assert prep2["fixed_cost_s"]["median"] == pytest.approx(
        prep2["seconds"]["median"] - prep2["engine_wall_s"]["median"])
    fast = not result["machine"]["tokenizers"].startswith("0.")
    rows = {(t["target"].split(":")[0], t["variant"]) for t in result["targets"]}
    assert ("fixed cost", "prep tokenizers w2 random") in rows
    assert ("summed peak RSS of the process tree, 2 workers, MB", "prep tokenizers w2 random") in rows
    assert (("prep[fast], all features", "prep tokenizers w2 random") in rows) is fast
    assert (("prep[fast], all features, whole command", "prep tokenizers w2 random") in rows) is fast
    assert (("prep[fast], --features none", "prep tokenizers w2 random --features none") in rows) is fast
    assert (("tokenizers 0.2x", "prep tokenizers w2 random") in rows) is not fast
    report, page = bench.format_report(result), bench.format_html(result)
    assert "prep tokenizers w2 random" in report and "WRONG" not in report and "issue 12's targets" in report
    assert page.count("<svg") >= 3


def test_the_warm_up_compiles_preps_bytecode_and_fills_numbas_cache_before_timing(tmp_path: Path, monkeypatch):
    """The bench times what a user's second run finds: prep's modules compiled to bytecode (this sandbox sets
    PYTHONDONTWRITEBYTECODE, under which every timed process compiled them again) and numba's cache of the
    features' and the rules' compiled code filled, by a process of the interpreter the runs use."""
    import compileall

    import prep

    compiled, ran = [], []
    monkeypatch.setattr(compileall, "compile_dir", lambda path, quiet: compiled.append(Path(path)))
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kwargs: ran.append((cmd, kwargs)))
    bench.warm_up(tmp_path / "warm")
    assert compiled == [Path(prep.__file__).resolve().parent]
    ((cmd, kwargs),) = ran
    assert cmd[:2] == [sys.executable, "-c"] and kwargs["check"] is True
    from prep.engines.local.forkserver import PRELOAD_COMPILED

    assert set(PRELOAD_COMPILED) == {"features", "rules"}  # the features' and the rules' compiled code, both
    assert cmd[2] == "import " + ", ".join(PRELOAD_COMPILED.values())


def test_a_wrong_token_count_is_flagged_and_fails_the_command(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(bench, "read_prep_tokens", lambda out: 1 + json.loads(
        (out / "_manifest.json").read_text())["counts"]["tokens"])
    app = typer.Typer()
    app.command()(bench.bench_command)
    json_out = tmp_path / "b.json"
    result = CliRunner().invoke(app, ["--corpus", str(SAMPLE / "corpus"), "--mb", "0.2", "--tokenizer",
                                      str(SAMPLE / "tokenizer.json"), "--workers", "1", "--repeats", "1",
                                      "--routers", "random", "--backends", "tokenizers", "--peers", "",
                                      "--json-out", str(json_out), "--workdir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    data = json.loads(json_out.read_text())
    prep_run = next(v for v in data["variants"] if v["kind"] == "prep")
    assert prep_run["summary"]["tokens_ok"] is False and prep_run["summary"]["fraction_of_ceiling"] is None
    assert prep_run["summary"]["tokens"] is None  # the wrong run is not counted as a speed
    assert any("WRONG TOKEN COUNT" in p for p in data["problems"])
    assert "WRONG" in result.output and (tmp_path / "b.html").exists()
    assert not list(tmp_path.glob("prep-bench-*"))  # the work directory is removed


def test_bad_names_are_one_clear_user_error(tmp_path: Path):
    with pytest.raises(bench.UserError, match="unknown name"):
        bench.run_bench(_tiny_options(tmp_path, scenarios=("main", "fast")))


def test_summary_of_made_up_runs():
    variants = bench.plan(["main", "memory"], ["tokenizers"], ["random"], [], 2, 4)
    corpora = {"main": bench.Corpus(Path("m"), 10_000_000, 100, 1),
               "scaled": bench.Corpus(Path("s"), 40_000_000, 400, 4)}

    def run(seconds: float, tokens: int, rss: float, **extra) -> dict:
        return {"ok": True, "error": None, "loadavg_1m": 1.0, "seconds": seconds, "tokens": tokens, "repeat": 0,
                "peak_rss_mb": rss, "peak_pss_mb": rss / 2, "cpu_s": {"coordinator": 1.0, "worker": seconds},
                "peak_rss_by_role_mb": {"coordinator": rss / 4, "worker": rss / 2}} | extra

    prep_extra = {"engine_wall_s": 4.0, "workers": [], "worker_cpu_s": [],
                  "engine_cpu_s": {"coordinator": 0.5, "writer": 0.25}}
    ceiling = [run(10.0, 5000, 100, encode_cpu_s=8.0), run(12.0, 5000, 100, encode_cpu_s=8.0)]
    runs = {"ceiling tokenizers 1 thread": ceiling,
            "ceiling tokenizers 2 processes": [run(6.0, 5000, 200, encode_cpu_s=12.0)],
            "pipeline tokenizers 1 process": [run(8.0, 5000, 150, encode_cpu_s=9.0)],
            "pipeline tokenizers 2 processes": [run(4.0, 5000, 250, encode_cpu_s=10.0), run(6.0, 5000, 250)],
            "prep tokenizers w2 random --features none": [run(4.5, 5000, 300, **prep_extra)],
            "prep tokenizers w1 random": [run(11.0, 5000, 300, **prep_extra)],
            "prep tokenizers w2 random": [run(5.0, 5000, 400, **prep_extra), run(6.0, 4999, 900, **prep_extra)],
            "prep tokenizers w2 random x4": [run(20.0, 20000, 440, **prep_extra)],
            "prep tokenizers w2 random +megatron+llmc": [run(5.5, 5000, 400, **prep_extra)]}
    result = bench.summarize(variants, runs, corpora, bench.BenchOptions(), 2, [])
    s = {v["name"]: v["summary"] for v in result["variants"]}
    assert result["ceilings"]["main"]["tokenizers"]["mb_s"] == pytest.approx((1.0 + 10 / 12) / 2)  # median of 2
    assert result["ceilings"]["main"]["tokenizers"]["cpu_mb_s"] == pytest.approx(1.25)
    w2 = s["prep tokenizers w2 random"]
    cost = s["prep tokenizers w2 random +megatron+llmc"]["vs_parquet_only"]
    assert cost == {"base": "prep tokenizers w2 random", "speed_ratio": pytest.approx(5.0 / 5.5),
                    "cpu_ratio": pytest.approx((1.0 + 5.5) / (1.0 + 5.0))}
    assert ("runs at 0.909x the speed of prep tokenizers w2 random (cost 9.1 % of throughput, +8.3 % CPU"
            in bench.format_report(result))
    assert w2["tokens_ok"] is False and w2["mb_s"]["n"] == 1  # the 4,999-token run is not a speed
    assert w2["fraction_of_ceiling"]["median"] == pytest.approx(2.0 / (2 * (1.0 + 10 / 12) / 2))
    assert w2["fraction_of_parallel_ceiling"]["median"] == pytest.approx(2.0 / (10 / 6))
    assert result["ceilings"]["main"]["tokenizers"]["processes_2_mb_s"] == pytest.approx(10 / 6)
    assert w2["cpu_efficiency"]["median"] == pytest.approx(10 / 1.25 / 6.0)  # 8 s of tokenizer work in 6 s of CPU
    assert w2["peak_rss_mb"] == 900  # the highest of all runs, failed or not
    x4 = s["prep tokenizers w2 random x4"]
    assert x4["tokens_ok"] is True and x4["tokens_expected"] == 20000
    assert x4["fraction_of_ceiling"]["median"] == pytest.approx(2.0 / (2 * (1.0 + 10 / 12) / 2))
    assert x4["memory_vs_1x"]["peak_rss_mb_ratio"] == pytest.approx(440 / 900)
    assert any("4,999" in p for p in result["problems"]) and len(result["problems"]) == 1
    assert w2["engine_cpu_s"] == {"coordinator": 0.5, "writer": 0.25}
    # the pipeline ceilings: one process, and 2 at once (the median of 2.5 and 1.67 MB/s); prep against them
    together = (10 / 4 + 10 / 6) / 2
    assert result["ceilings"]["main"]["tokenizers"]["pipeline_mb_s"] == pytest.approx(10 / 8)
    assert result["ceilings"]["main"]["tokenizers"]["pipeline_processes_2_mb_s"] == pytest.approx(together)
    assert w2["fraction_of_parallel_pipelines"]["median"] == pytest.approx(2.0 / together)
    assert w2["engine_fraction_of_parallel_pipelines"]["median"] == pytest.approx(10 / 4.0 / together)  # engine: 4 s
    assert w2["engine_fraction_of_parallel_ceiling"]["median"] == pytest.approx(10 / 4.0 / (10 / 6))
    assert s["prep tokenizers w1 random"]["fraction_of_parallel_pipelines"]["median"] == pytest.approx((10 / 11) / 1.25)
    assert s["pipeline tokenizers 2 processes"]["fraction_of_parallel_pipelines"] is None
    assert s["pipeline tokenizers 2 processes"]["tokens_ok"] is True
    assert w2["fixed_cost_s"]["median"] == pytest.approx(5.0 - 4.0)  # the command's seconds minus the engine's
    assert w2["peak_rss_mb_runs"] == {"median": 650, "min": 400, "max": 900, "n": 2}


def test_per_stage_costs_leave_out_start_and_finish():
    """The budget line counts the coordinator's and the writer's CPU while the engine runs (from the manifest), and
    says apart what they and the forkserver spent besides."""
    summary = {"cpu_s": {"coordinator": 1.5, "writer": 0.75, "worker": 3.0, "helper": 0.5},
               "engine_cpu_s": {"coordinator": 0.25, "writer": 0.5},
               "workers": [{"busy_s": 1.0, "parse_s": 0.125, "tokenize_s": 0.5, "features_s": 0.25, "transport_s": 0.0},
                           {"busy_s": 1.5, "parse_s": 0.125, "tokenize_s": 1.0, "features_s": 0.25,
                            "transport_s": 0.125}]}
    line = bench._per_mib(summary, 2 * 2**20)
    assert line == "125.0, 125.0, 750.0, 250.0, 62.5, 250.0; start and finish 2.00 s"  # 2.75 - 0.25 - 0.5


def _run_peer(kind: str, slice_dir: Path, out: Path, workers: int, batch_bytes: int = 2**20) -> dict:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "prep.tools.bench_peers", kind, "--input", str(slice_dir),
                           "--tokenizer", str(SAMPLE / "tokenizer.json"), "--workers", str(workers), "--output",
                           str(out), "--batch-bytes", str(batch_bytes)], env=bench._env(1), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _written(out: Path) -> tuple[dict[str, list[int]], list[pq.ParquetFile]]:
    """id -> input_ids of every row a run wrote (ids are unique in the slice), and its files."""
    files = [pq.ParquetFile(p) for p in sorted(out.glob("*.parquet"))]
    by_id: dict[str, list[int]] = {}
    for f in files:
        assert f.schema_arrow.field("input_ids").type == pa.list_(pa.uint32())
        table = f.read()
        assert table.column("num_tokens").to_pylist() == [len(x) for x in table.column("input_ids").to_pylist()]
        by_id |= dict(zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist(), strict=True))
    return by_id, files


@pytest.fixture(scope="module")
def sample_slice(tmp_path_factory) -> tuple[Path, dict[str, list[int]]]:
    """A slice of sample_data as the bench makes it, and the oracle: tokenizers' own encode_batch per document."""
    dest = tmp_path_factory.mktemp("slice")
    bench.make_slice(bench.read_source(SAMPLE / "corpus"), 0.3, dest)
    docs = [json.loads(line) for f in input_files(dest) for line in f.open(encoding="utf-8")]
    encodings = load_hf_tokenizer(SAMPLE / "tokenizer.json").encode_batch([d["text"] for d in docs])
    expected = {d["id"]: list(e.ids) for d, e in zip(docs, encodings, strict=True)}
    assert len(expected) == len(docs) > 100  # ids are unique
    return dest, expected


def test_raw_blocks_end_at_line_ends_and_cover_every_byte(sample_slice):
    slice_dir, _ = sample_slice
    blocks = bench_peers.raw_blocks(input_files(slice_dir), 4096)
    for f in input_files(slice_dir):
        data = f.read_bytes()
        mine = [(a, b) for g, a, b in blocks if g == f]
        assert [a for a, _ in mine] == [0] + [b for _, b in mine[:-1]] and mine[-1][1] == len(data)
        assert all(data[b - 1:b] == b"\n" for _, b in mine)
        assert all(b - a >= 4096 for a, b in mine[:-1])  # a block only ends at the first line end past its size
    assert len(blocks) > 2 * len(input_files(slice_dir))


@pytest.mark.parametrize("workers", [1, 2])
def test_pipeline_ceiling_writes_the_tokenizers_ids(sample_slice, tmp_path: Path, workers: int):
    slice_dir, expected = sample_slice
    result = _run_peer("pipeline-tokenizers", slice_dir, tmp_path, workers, batch_bytes=16384)
    by_id, files = _written(tmp_path)
    assert len(files) == workers and all(f.metadata.num_rows > 0 for f in files)  # every process wrote its share
    assert files[0].metadata.row_group(0).column(0).compression == "ZSTD"
    assert by_id == expected
    assert result["tokens"] == sum(map(len, expected.values())) == bench_peers.output_tokens("pipeline", tmp_path)
    assert result["documents"] == len(expected) and result["seconds"] > 0 and result["cpu_seconds"] > 0


def test_pool_batch_peer_writes_the_tokenizers_ids(sample_slice, tmp_path: Path):
    slice_dir, expected = sample_slice
    _run_peer("pool-batch", slice_dir, tmp_path, 2)
    by_id, files = _written(tmp_path)
    assert by_id == expected and sum(f.metadata.num_rows for f in files) == len(expected)
    assert files[0].metadata.row_group(0).column(0).compression == "ZSTD"


def test_datatrove_peer_writes_the_tokenizers_ids(sample_slice, tmp_path: Path):
    """The peer runs (its reader's imports are there: `bench` leaves it out, saying why, where they are not)."""
    slice_dir, expected = sample_slice
    assert bench_peers.datatrove_missing() == []
    _run_peer("datatrove", slice_dir, tmp_path, 2)
    tables = [pq.read_table(p) for p in sorted((tmp_path / "data").glob("*.parquet"))]
    by_id = {i: ids for t in tables for i, ids in zip(t.column("id").to_pylist(), t.column("input_ids").to_pylist(),
                                                       strict=True)}
    assert by_id == expected and sum(t.num_rows for t in tables) == len(expected)


def test_a_peer_that_cannot_run_here_is_left_out_with_what_it_needs(monkeypatch):
    monkeypatch.setattr(bench, "datatrove_missing", lambda: ["orjson"])
    _, peers, notes = bench._available(bench.BenchOptions(backends=("tokenizers",), peers=("pool", "datatrove")))
    assert peers == ["pool"]
    assert notes == ["datatrove peer left out: orjson not installed (pip install orjson to include it)"]


def _made_up(version: str, **variants: dict) -> dict:
    """A result dict with just what `targets` reads: variants by name, each with its summary."""
    def stat(x: float) -> dict:
        return {"median": x, "min": x - 0.05, "max": x + 0.05, "n": 3}

    out = []
    for name, v in variants.items():
        summary = {k: None for k in ("fraction_of_parallel_pipelines", "engine_fraction_of_parallel_pipelines",
                                     "fraction_of_parallel_ceiling", "engine_fraction_of_parallel_ceiling",
                                     "fraction_of_ceiling", "engine_fraction_of_ceiling", "fixed_cost_s",
                                     "peak_rss_mb_runs")}
        summary |= {k: stat(x) for k, x in v.pop("summary", {}).items()}
        summary["vs_peers_runs"] = {p: stat(x) for p, x in v.pop("vs", {}).items()}
        summary["memory_vs_1x"] = v.pop("memory_vs_1x", None)
        out.append({"name": name, "kind": "prep", "scenario": "main", "backend": "tokenizers", "workers": 2,
                    "features": None, "formats": [], "scale": 1, "peer": None} | v | {"summary": summary})
    return {"machine": {"tokenizers": version}, "options": {"workers": 2}, "variants": out}


def test_targets_are_met_at_the_threshold_and_left_out_when_not_measured():
    result = _made_up(
        "1.0.0-rc.3",
        **{"prep tokenizers w2 random": {"summary": {"fraction_of_parallel_pipelines": 0.8, "fixed_cost_s": 0.4,
                                                     "engine_fraction_of_parallel_pipelines": 0.79,
                                                     "peak_rss_mb_runs": 500.5}, "vs": {"pool-batch": 1.49}},
           "prep tokenizers w2 random --features none": {"features": "none", "summary": {
               "fraction_of_parallel_pipelines": 0.9, "engine_fraction_of_parallel_pipelines": 0.95}},
           "prep tokenizers w2 random x4": {"scenario": "memory", "scale": 4, "summary": {"peak_rss_mb_runs": 480},
                                            "memory_vs_1x": {"peak_rss_mb_ratio": 1.1}},
           "prep tokenizers w2 random tiny": {"scenario": "tiny", "summary": {"fraction_of_ceiling": 0.4999}},
           "prep tokenizers w1 random": {"workers": 1, "summary": {"fraction_of_parallel_pipelines": 0.1}},
           "pool-batch w2": {"kind": "peer", "peer": "pool-batch"}})
    result["feed"] = {"gb_s": 1.5}
    result["filters"] = {"cpu_ms_per_mib": {"all rule sets": 3.1},
                         "cpu_ms_per_mib_runs": {"all rule sets": [3.1, 2.9, 3.2]}}
    rows = {(t["target"].split(":")[0], t["variant"]): t for t in bench.targets(result)}
    met = {k: t["met"] for k, t in rows.items()}
    assert met == {
        ("prep[fast], all features", "prep tokenizers w2 random"): True,  # 0.8 >= 0.8
        ("prep[fast], all features, engine", "prep tokenizers w2 random"): False,  # 0.79 < 0.8
        ("prep[fast], all features, whole command", "prep tokenizers w2 random"): False,  # 1.49 < 1.5
        ("prep[fast], --features none", "prep tokenizers w2 random --features none"): True,  # 0.9 >= 0.9
        ("prep[fast], --features none, engine", "prep tokenizers w2 random --features none"): True,  # 0.95
        ("fixed cost", "prep tokenizers w2 random"): True,  # 0.4 <= 0.4
        ("10^6 one-line documents", "prep tokenizers w2 random tiny"): False,  # 0.4999 < 0.5
        ("feed rate (--scenarios feed), GB/s", "feed"): True,  # 1.5 >= 1.5
        ("issue 14", "filters"): False,  # median 3.1 > 3 ms/MiB
        ("summed peak RSS of the process tree, 2 workers, MB", "prep tokenizers w2 random"): False,  # 500.5 > 500
        ("summed peak RSS of the process tree, 2 workers, MB", "prep tokenizers w2 random x4"): True,
        ("flat memory", "prep tokenizers w2 random x4"): True}  # 1.1 <= 1.1: no 0.2x, tiktoken or w1 rows
    assert rows[("prep[fast], all features", "prep tokenizers w2 random")]["value"]["min"] == pytest.approx(0.75)
    table = "\n".join(bench.format_targets(list(rows.values())))
    assert "0.800 [0.750–0.850]" in table and "≥ 0.8" in table and "≤ 0.4" in table and " NO" in table
    assert "500 [500–501]" in table  # MB without decimals (500.5 rounds to even)

    # under tokenizers 0.2x the prep[fast] targets go and the 0.2x one comes; a missing value is not met
    plain = _made_up("0.23.3", **{"prep tokenizers w2 random": {"summary": {
        "fraction_of_parallel_ceiling": 0.95, "engine_fraction_of_parallel_ceiling": 0.97}},
                                  "prep tiktoken w2 random": {"backend": "tiktoken"}})
    assert {(t["target"].split(":")[0], t["variant"], t["met"]) for t in bench.targets(plain)} == {
        ("tokenizers 0.2x", "prep tokenizers w2 random", True), ("tiktoken", "prep tiktoken w2 random", False),
        ("tokenizers 0.2x, engine", "prep tokenizers w2 random", True),
        ("tiktoken, engine", "prep tiktoken w2 random", False),
        ("fixed cost", "prep tokenizers w2 random", False), ("fixed cost", "prep tiktoken w2 random", False),
        ("summed peak RSS of the process tree, 2 workers, MB", "prep tokenizers w2 random", False),
        ("summed peak RSS of the process tree, 2 workers, MB", "prep tiktoken w2 random", False)}
    assert bench.targets(_made_up("1.0.0-rc.3")) == [] and bench.format_targets([]) == []


def test_the_filters_scenario_times_decoding_alone_and_each_group_of_features():
    """The rows that show what every rule set shares and what each group of features costs: "decoding alone" must
    judge nothing (each rule set skips each text, English or Chinese, so only the decoding is left), and every
    text feature must be in exactly one group, so that the groups account for the features' whole cost."""
    from prep.text.features import FEATURES
    from prep.text.filters import RULE_SETS, text_verdict

    texts = pa.array(["", "Short.", "中文的句子。", "The cat sat on the mat. " * 40, "x" * 3000])
    verdict = text_verdict(texts, bench.decoding_only())
    assert verdict.keep.all() and verdict.counts() == {}
    assert verdict.skipped == dict.fromkeys(RULE_SETS, len(texts))

    grouped = [name for names in bench.FEATURE_GROUPS.values() for name in names]
    text_features = [f for f in FEATURES if f not in ("num_tokens", "chars_per_token", "unique_token_ratio")]
    assert sorted(grouped) == sorted(set(text_features) - {"num_bytes"})  # num_bytes: Arrow's offsets, no pass

    costs = bench.filter_costs([pa.table({"text": texts})], repeats=1)
    assert set(costs["cpu_ms_per_mib"]) == {
        *RULE_SETS, "all rule sets", "decoding alone (every rule set skips every text)", "features (text ones)",
        *(f"features: {group}" for group in bench.FEATURE_GROUPS)}
    result = _made_up("1.0.0-rc.3") | {"notes": [], "corpora": {}, "problems": [], "filters": costs}
    result["machine"] |= {"cpus": 2, "cpu_model": "x", "note": ""}
    report = bench.format_report(result)
    assert "features: top n-grams" in report and "decoding alone" in report
