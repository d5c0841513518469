"""`prep run --engine ray`: the same bytes as the local engine, on one node and on a cluster that loses a
node's workers mid-run, through non-local filesystems, resumed after a crash; and a one-line word without Ray.

The local engine's output (run by the real command line) is the reference every Ray run must equal byte for
byte: shards, quarantine and journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from conftest import SAMPLE, SAMPLE_TOKENIZER, corpus_docs, prep_cmd, shard_bytes_of, write_jsonl, write_piece_inputs

from prep.config import PipelineConfig
from prep.errors import UserError
from prep.io.ownership import MARKER
from prep.io.writer import JOURNAL, MANIFEST, QUARANTINE
from prep.request import RunRequest

CORPUS = SAMPLE / "corpus"  # JSONL, .jsonl.gz, CSV, Parquet and a run of .txt files, with bad records
SIZES = ("--chunk-bytes", "16KiB", "--shard-bytes", "64KiB")  # ~25 chunks in ~6 shards


def _config(**overrides) -> PipelineConfig:
    config = PipelineConfig(tokenizer=str(SAMPLE_TOKENIZER), backend="tokenizers", workers=2,
                            chunk_bytes=16 * 1024, shard_bytes=64 * 1024)
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _files(out: Path) -> dict[str, bytes]:
    """What must not depend on the engine: shards, quarantine, journal. The journal's header records each
    input's mtime (what --resume checks), which a copy of the corpus to another file system changes: it is
    compared without it."""
    files = shard_bytes_of(out)
    for name in (QUARANTINE, JOURNAL):
        if (out / name).exists():
            files[name] = (out / name).read_bytes()
    if JOURNAL in files:
        header, rest = files[JOURNAL].split(b"\n", 1)
        fingerprint = json.loads(header)
        fingerprint["fingerprint"]["inputs"] = [row[:2] for row in fingerprint["fingerprint"]["inputs"]]
        files[JOURNAL] = json.dumps(fingerprint).encode() + b"\n" + rest
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path_factory.mktemp("reference") / "out"
    prep_cmd("run", "--input", CORPUS, "--output", out, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2",
             "--backend", "tokenizers", *SIZES, "--no-progress", check=True)
    files = _files(out)
    assert len([n for n in files if n.startswith("part-")]) >= 4 and files.get(QUARANTINE)
    return out, files


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             ignore_reinit_error=True, log_to_driver=False)  # "local": never join a cluster left running here
    yield ray
    ray.shutdown()


def _run(output, **kwargs):
    from prep.engines.ray.run import run_ray

    inputs = kwargs.pop("inputs", [str(CORPUS)])
    request = RunRequest(inputs, output, kwargs.pop("config", _config()), overwrite=True,
                         resume=kwargs.pop("resume", False), engine="ray")
    return run_ray(request, None, kwargs.pop("on_progress", None), **kwargs)


@pytest.mark.slow
def test_command_line_ray_engine_writes_the_local_engines_bytes(tmp_path, reference):
    """A local Ray instance started by `prep run --engine ray` itself, another router and seed."""
    out = tmp_path / "ray"
    proc = prep_cmd("run", "--engine", "ray", "--input", CORPUS, "--output", out, "--tokenizer", SAMPLE_TOKENIZER,
                    "--workers", "2", "--router", "p2c", "--seed", "5", "--backend", "tokenizers", *SIZES,
                    "--no-progress", check=True)
    assert _files(out) == reference[1]
    manifest = json.loads((out / MANIFEST).read_text())
    expected = json.loads((reference[0] / MANIFEST).read_text())
    assert manifest["counts"] == expected["counts"] and manifest["shards"] == expected["shards"]
    assert manifest["engine"]["name"] == "ray" and manifest["engine"]["address"] == "local"
    assert manifest["routing"]["router"] == "p2c"
    assert sum(w["chunks"] for w in manifest["routing"]["workers"]) == manifest["routing"]["tasks"]
    assert "in = written + quarantined + filtered" in proc.stdout
    report = prep_cmd("report", out, check=True)  # the run report reads a Ray run's manifest and routing table
    assert (out / "report.html").stat().st_size > 0, report.stdout


@pytest.mark.slow
def test_writers_spread_over_shards_and_user_errors_stay_one_line(tmp_path, reference, local_ray):
    result = _run(tmp_path / "out", writers=3)
    assert _files(tmp_path / "out") == reference[1]
    assert result.manifest["engine"]["writers"] == 3
    with pytest.raises(UserError, match="no field 'body'"):  # raised in a reader task on the cluster
        _run(tmp_path / "bad", config=_config(text_field="body"))


@pytest.mark.slow
def test_binary_formats_and_packing_are_the_local_engines_bytes(tmp_path, local_ray):
    """Megatron, llm.c and bfd-packed Parquet, written by Ray's writer actors, equal the local engine's files."""
    local = tmp_path / "local"
    prep_cmd("run", "--input", CORPUS, "--output", local, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2",
             "--backend", "tokenizers", *SIZES, "--format", "parquet", "--format", "megatron", "--format", "llmc",
             "--pack-seq-len", "200", "--pack-method", "bfd", "--no-progress", check=True)
    config = _config(formats=["parquet", "megatron", "llmc"], pack_seq_len=200, pack_method="bfd")
    result = _run(tmp_path / "ray", config=config, writers=3)
    every = {p.name: p.read_bytes() for p in sorted(local.glob("part-*"))}
    assert len([n for n in every if n.endswith(".idx")]) >= 4
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "ray").glob("part-*"))} == every
    assert _files(tmp_path / "ray") == _files(local)  # journal and quarantine too
    assert result.manifest["packing"] == json.loads((local / MANIFEST).read_text())["packing"]


def _crash_after_commits(journal: Path, shards: int):
    """A progress callback that interrupts the run (as Ctrl-C would) once `shards` shards are committed."""

    def crash(nbytes: int, docs: int) -> None:
        if journal.exists() and len(journal.read_text().splitlines()) > shards:
            raise KeyboardInterrupt

    return crash


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ray", "local"])
def test_crash_then_resume_gives_the_same_bytes(tmp_path, reference, engine):
    """`prep run --engine ray` SIGKILLed once a shard is committed (no clean-up of any kind runs); either engine
    finishes the run (they share the journal's format) and what was committed is not written again."""
    out = tmp_path / "out"
    args = ["--input", CORPUS, "--output", out, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2", "--backend",
            "tokenizers", *SIZES, "--no-progress"]
    driver = subprocess.Popen([sys.executable, "-m", "prep", "run", "--engine", "ray", *map(str, args)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(_journal_lines(out)) < 2:  # the header, then one committed shard
            assert driver.poll() is None, f"the run ended before the kill:\n{driver.stderr.read()}"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.01)
        driver.kill()
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # what Ray itself leaves of a killed driver (its agents)
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == -signal.SIGKILL
    committed = [json.loads(line) for line in _journal_lines(out)[1:]]
    assert 0 < len(committed) < len(reference[1]) - 2 and not (out / MANIFEST).exists()
    stamps = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in committed if e["file"]}
    resumed = prep_cmd("run", *args, "--resume", *(["--engine", "ray"] if engine == "ray" else []), check=True)
    if engine == "local":
        assert f"resuming after {len(committed)} committed shard(s)" in resumed.stderr
    assert _files(out) == reference[1]
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["counts"] == json.loads((reference[0] / MANIFEST).read_text())["counts"]


def _journal_lines(out: Path) -> list[str]:
    """Complete lines only: a line being written is not one yet."""
    try:
        text = (out / JOURNAL).read_text()
    except FileNotFoundError:
        return []
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]


@pytest.mark.slow
def test_input_and_output_through_a_non_local_filesystem(tmp_path, reference, local_ray):
    """A SubTreeFileSystem is not a LocalFileSystem: inputs are listed and copied to the readers through it,
    shards are uploaded into it, and the journal is rewritten whole (as on an object store)."""
    local = pafs.LocalFileSystem()
    shutil.copytree(CORPUS, tmp_path / "bucket-in" / "corpus")
    (tmp_path / "bucket-out").mkdir()
    source = pafs.SubTreeFileSystem(str(tmp_path / "bucket-in"), local)
    sink = pafs.SubTreeFileSystem(str(tmp_path / "bucket-out"), local)
    crash = _crash_after_commits(tmp_path / "bucket-out" / "tokenized" / JOURNAL, 1)
    with pytest.raises(KeyboardInterrupt):
        _run("tokenized", inputs=["corpus"], input_filesystem=source, output_filesystem=sink, on_progress=crash)
    _run("tokenized", inputs=["corpus"], input_filesystem=source, output_filesystem=sink, resume=True)
    out = tmp_path / "bucket-out" / "tokenized"
    assert _files(out) == reference[1]
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.partial"))


@pytest.mark.slow
def test_command_line_reads_and_writes_s3(tmp_path, reference):
    """`--input s3://... --output s3://...` against an S3-compatible server (moto) started here; the
    credentials come from the environment, as on a real cluster. Objects have no rename and no append: shards
    are put under their final names and the journal is rewritten whole."""
    server_mod = pytest.importorskip("moto.server", reason="the S3 test needs moto[s3], flask and flask-cors")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"endpoint_override=http://{host}:{port}&scheme=http&region=us-east-1"
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
        s3 = pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=f"http://{host}:{port}",
                               scheme="http", region="us-east-1", allow_bucket_creation=True)
        s3.create_dir("bucket")
        pafs.copy_files(str(CORPUS), "bucket/corpus", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=s3)
        prep_cmd("run", "--engine", "ray", "--input", f"s3://bucket/corpus?{endpoint}", "--output",
                 f"s3://bucket/tokenized?{endpoint}", "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2",
                 "--backend", "tokenizers", *SIZES, "--no-progress", check=True, env=env)
        out = tmp_path / "download"
        out.mkdir()
        pafs.copy_files("bucket/tokenized", str(out), source_filesystem=s3,
                        destination_filesystem=pafs.LocalFileSystem())
        assert _files(out) == reference[1]
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == [
            MARKER, JOURNAL, MANIFEST, QUARANTINE, "_routing.parquet"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def big_reference(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """~5 MB of real documents in 256 KiB chunks: results are too big to travel inline with Ray's replies,
    so they live in the object store of the node that computed them (and go with it)."""
    corpus = tmp_path_factory.mktemp("big") / "in"
    write_jsonl(corpus / "a.jsonl", corpus_docs("en_gutenberg_nltk", 40) + corpus_docs("zh_poetry", 2000))
    write_jsonl(corpus / "b.jsonl", corpus_docs("code_python_stdlib", 150) + corpus_docs("en_foldoc", 1500))
    out = corpus.parent / "out"
    prep_cmd("run", "--input", corpus, "--output", out, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2",
             "--backend", "tokenizers", "--chunk-bytes", "256KiB", "--shard-bytes", "1MiB", "--no-progress",
             check=True)
    return corpus, _files(out)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill-workers", "remove-node"])
def test_a_cluster_that_loses_a_nodes_workers_loses_and_doubles_nothing(tmp_path, big_reference, fault):
    """Three nodes on this machine, one worker actor each. Mid-run, either every Ray worker process of one
    node is killed (Ray restarts its actors; the engine routes their tasks again), or the node itself goes
    (its actors cannot come back for want of CPUs, and the results in its object store are lost: the
    engine computes them again)."""
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    fast_detection = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
                      "health_check_failure_threshold": 4}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 2**20,
        "_system_config": fast_detection})
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2)]
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        victim = nodes[0]
        raylet = psutil.Process(victim.all_processes["raylet"][0].process.pid)
        completed = []

        def strike(nbytes: int, docs: int) -> None:
            completed.append(nbytes)
            if len(completed) != 6:
                return
            if fault == "remove-node":
                cluster.remove_node(victim, allow_graceful=False)
                return
            for child in raylet.children(recursive=True):  # the node's workers, not its agents
                if child.name().startswith("ray::") and not child.name().endswith("Agent"):
                    child.kill()

        config = _config(workers=3, chunk_bytes=256 * 1024, shard_bytes=2**20)
        result = _run(tmp_path / "out", inputs=[str(big_reference[0])], config=config, on_progress=strike)
        assert _files(tmp_path / "out") == big_reference[1]
        assert len(set(result.manifest["engine"]["worker_nodes"])) == 3
        assert any("worker lost" in f for f in result.faults)
        assert sum(w["restarts"] for w in result.manifest["routing"]["workers"]) >= 1
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_near_dedup_with_the_band_index_on_actors_writes_the_local_engines_bytes(tmp_path):
    """Exact and near dedup with a threshold checked on shingles and a budget so small that every band-index
    actor spills: the same shards, audit and index records as the local engine with its in-memory index."""
    from test_dedup import near_corpus, run_dedup

    inp, docs, planted = near_corpus(tmp_path / "in.jsonl")
    flags = ("--workers", "2", "--keep-filtered", "--dedup", "exact,near", "--dedup-threshold", "0.8")
    local = run_dedup(inp, tmp_path / "local", *flags)
    ray = run_dedup(inp, tmp_path / "ray", *flags, "--engine", "ray", "--dedup-memory", "1KiB")
    assert shard_bytes_of(ray) == shard_bytes_of(local) and len(shard_bytes_of(local)) >= 3
    for name in ("_filtered.parquet", "_dedup.jsonl"):
        assert (ray / name).read_bytes() == (local / name).read_bytes()
    manifests = [json.loads((o / MANIFEST).read_text()) for o in (local, ray)]
    assert manifests[0]["counts"] == manifests[1]["counts"]
    assert manifests[1]["dedup"]["spilled"] and not manifests[0]["dedup"]["spilled"]
    assert {**manifests[1]["dedup"], "spilled": False} == manifests[0]["dedup"]
    assert manifests[0]["dedup"]["near_removed"] > 10


@pytest.mark.slow
def test_band_index_actors_each_hold_only_their_bands_and_decide_as_one_store(local_ray):
    """Rows of band keys with known duplicates (whole copies, copies inside a batch, one shared band), fed in
    batches to a Deduper whose bands are on 3 actors with a tiny budget: the expected removals, the same
    decisions as the in-process store, and actor k holds bands k, k+3, ... with one entry per distinct key of
    the kept documents."""
    import numpy as np

    from prep.core.dedup import Deduper, DedupSettings
    from prep.engines.ray.band_index import ShardedBands

    rng = np.random.default_rng(4)
    keys = rng.integers(1, 2**63, (600, 14), dtype=np.uint64)
    keys[10:20] = keys[0:10]  # in the same batch as their originals
    keys[300:400] = keys[0:100]
    keys[400:500, 3] = keys[100:200, 3]  # one band shared
    expected = {str(i): str(i - 10) for i in range(10, 20)}
    expected |= {str(300 + j): str(j - 10 if 10 <= j < 20 else j) for j in range(100)}
    expected |= {str(400 + j): str(100 + j) for j in range(100)}
    settings = DedupSettings(near=True, keep_rows=True)
    sharded = ShardedBands(local_ray, 14, 3, memory=1024)
    decided = []
    for deduper in (Deduper(settings), Deduper(settings, sharded)):
        removed = {}
        for start in range(0, 600, 50):
            ids = [str(i) for i in range(start, start + 50)]
            decision = deduper.decide(ids, {"dedup_bands": keys[start:start + 50].tobytes()})
            removed |= {row["id"]: row["duplicate_of"] for row in decision["rows"]}
        decided.append(removed)
    assert decided[0] == decided[1] == expected
    kept = [i for i in range(600) if str(i) not in expected]
    held = sharded.held()
    assert [h["bands"] for h in held] == [list(range(k, 14, 3)) for k in range(3)]
    for h in held:
        assert h["spilled"]
        assert h["entries"] == [len({int(keys[i, band]) for i in kept}) for band in h["bands"]]
    sharded.close()


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from prep.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(app, ["run", "--engine", "ray", "--input", str(CORPUS), "--output",
                                      str(tmp_path / "out"), "--tokenizer", str(SAMPLE_TOKENIZER)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["prep: error: --engine ray needs Ray, an optional extra: "
                                                  "pip install 'prep[ray]'"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_parquet_dataset_and_txt_pieces_are_the_local_engines_bytes(tmp_path, local_ray):
    """Readers cut Parquet (a large row group into row ranges), a saved dataset and .txt files from metadata;
    stage actors read the pieces, bad rows included: the same shards, quarantine and journal as the local
    engine."""
    docs = corpus_docs("en_fortunes", 400) + corpus_docs("zh_poetry", 200)
    texts = [d["text"] for d in docs]
    texts[17], texts[450] = None, "x" * 5000  # a null text; one over max_document_bytes
    inputs = write_piece_inputs(tmp_path / "in", [d["id"] for d in docs], texts, 300, 280, 300)
    local = tmp_path / "local"
    prep_cmd("run", "--input", inputs, "--output", local, "--tokenizer", SAMPLE_TOKENIZER, "--workers", "2",
             "--backend", "tokenizers", *SIZES, "--max-document-bytes", "4KiB", "--no-progress", check=True)
    _run(tmp_path / "ray", inputs=[str(inputs)], config=_config(max_document_bytes=4096))
    assert _files(tmp_path / "ray") == _files(local)
    quarantine = [json.loads(line) for line in (local / QUARANTINE).read_text().splitlines()]
    assert [(q["file"], q["row"]) for q in quarantine] == [("a.parquet", 17), ("b_saved", 150)]
