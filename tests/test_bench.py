"""prep bench: inputs, the process-tree sampler, a tiny real bench, and the token check that flags a wrong answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from prep.text.hf import load_hf_tokenizer
from prep.tools import bench
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


def test_plan_covers_workers_routers_backends_peers_and_scenarios():
    variants = bench.plan(["main", "memory", "tiny"], ["tokenizers", "tiktoken"], ["random", "p2c"], ["pool"], 2, 4)
    names = [v.name for v in variants]
    assert len(names) == len(set(names))
    assert names[:9] == ["ceiling tokenizers 1 thread", "ceiling tokenizers 2 processes", "ceiling tiktoken 1 thread",
                         "ceiling tiktoken 2 processes", "prep tokenizers w1 random", "prep tokenizers w2 random",
                         "prep tokenizers w2 p2c", "prep tiktoken w1 random", "prep tiktoken w2 random"]
    scaled = [v for v in variants if v.corpus == "scaled"]
    assert [(v.name, v.scale, v.reference, v.workers) for v in scaled] == [
        ("prep tokenizers w2 random x4", 4, "main", 2), ("prep tiktoken w2 random x4", 4, "main", 2)]
    assert {v.name for v in variants if v.scenario == "tiny"} == {
        "ceiling tokenizers 1 thread tiny", "ceiling tiktoken 1 thread tiny", "prep tokenizers w2 random tiny",
        "prep tiktoken w2 random tiny"}
    assert [(v.peer, v.workers) for v in variants if v.kind == "peer"] == [("pool", 2)]
    assert [(v.name, v.formats) for v in variants if v.formats] == [
        ("prep tokenizers w2 random +megatron+llmc", ("megatron", "llmc"))]


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
    result = bench.run_bench(_tiny_options(tmp_path, workers=2, peers=("pool",)))
    assert set(result) >= {"machine", "options", "corpora", "ceilings", "variants", "problems", "notes"}
    assert result["problems"] == []
    names = [v["name"] for v in result["variants"]]
    assert names == ["ceiling tokenizers 1 thread", "ceiling tokenizers 2 processes", "prep tokenizers w1 random",
                     "prep tokenizers w2 random", "prep tokenizers w2 random +megatron+llmc", "pool w2"]
    cost = result["variants"][4]["summary"]["vs_parquet_only"]  # the same run writing the binary formats too
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
    report, page = bench.format_report(result), bench.format_html(result)
    assert "prep tokenizers w2 random" in report and "WRONG" not in report
    assert page.count("<svg") >= 3


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
