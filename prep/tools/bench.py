"""`prep bench`: prep against the ceiling and against the tools users run today, in one run.

The ceiling on a machine is N cores x one core's tokenizer speed; everything else a pipeline
does is overhead. The bench measures, interleaved and repeated so that machine noise shows
as spread: each backend's one-thread ceiling (`python -m prep.tools.bench_peers ceiling-*`) and N
such processes run at once (what N cores really give here), the pipeline ceiling (one thread
reading, parsing, tokenizing and writing the slice itself, `bench_peers pipeline-*`) alone and
N at once, `prep run` (the real command line, built-in pre-training pipeline: every feature,
zstd) at 1..N workers and with each router and backend, and once with `--features none`, and
the peers of `prep.tools.bench_peers` at N. At the end, issue 12's targets that the run
measured, each with its threshold and whether it was met (`targets`). Each run is a child process;
its whole process tree is sampled (RSS every 50 ms, PSS every 0.5 s, CPU per process), so
besides wall-clock fractions it reports CPU efficiency (the tokenizer's own CPU need over
all CPU the tree spent), which other work on a shared machine does not move. Every run's
token count must equal the reference ceiling's, read back from what the run wrote (prep:
its manifest), so a fast wrong answer cannot win.

Inputs are built once per bench in a work directory: a slice of the corpus (a proportional,
deterministic mix of every file, one JSON Lines file per source file), 10^6 tiny one-line
documents, one huge document, and the slice hard-linked `--memory-factor` times.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import typer

from prep.config import PipelineConfig
from prep.core.router import ROUTERS
from prep.errors import UserError
from prep.tools.bench_peers import PEERS, datatrove_missing, output_tokens

SHARED = Path(__file__).resolve().parents[3] / "shared"  # beside the checkout
DEFAULT_CORPUS = SHARED / "corpus"
DEFAULT_TOKENIZER = SHARED / "tokenizers" / "gpt2.tokenizer.json"
# prep run's default router first: the scaling rows (1, 2, 4, .. workers) and the targets use the first router, so
# they measure what a user's run does; the others are compared at N workers
BENCH_ROUTERS = (PipelineConfig.router, *(r for r in ROUTERS if r != PipelineConfig.router))
SCENARIOS = ("main", "tiny", "huge", "memory", "filters", "feed")
FEED_TARGET_GB_S = 1.5  # enough uncompressed JSON Lines for 32 workers at 50 MB/s
BACKENDS = ("tokenizers", "tiktoken")
BINARY_FORMATS = ("megatron", "llmc")  # written besides Parquet by one variant: what they cost
TINY_MAX_BYTES = 200  # a "tiny" document is one line of 1..200 bytes
CHUNK_BYTES = 2**20  # prep's default chunk; the ceilings encode batches of the same size
RSS_EVERY_S, PSS_EVERY_S, CHILDREN_EVERY_S = 0.05, 0.5, 0.05
# Issue 12's targets (see `targets`): fractions of N ceilings run at once, ratios, seconds and MB
PIPELINE_TARGET = 0.8  # prep[fast], all features: x N pipeline ceilings at once
NO_FEATURES_PIPELINE_TARGET = 0.9  # prep[fast], --features none: x N pipeline ceilings at once
POOL_BATCH_PEER = "pool-batch"  # the Pool + tokenizers 1.x script
PEER_TARGET = 1.5  # prep[fast], the whole command: x that peer's speed
TOKENIZERS_0_TARGET = 0.95  # tokenizers 0.2x: x N one-thread (tokenize-only) ceilings at once
TIKTOKEN_TARGET = 0.8  # tiktoken: x N one-thread ceilings at once
TINY_TARGET = 0.5  # 10^6 one-line documents: x the ceiling's docs/s
FIXED_COST_TARGET_S = 0.4  # the whole command minus the engine's time
MEMORY_TARGET_MB = 500  # summed peak RSS of the process tree, 2 workers
MEMORY_FLAT_TARGET = 1.1  # peak RSS at memory-factor x the slice over 1x ("flat"; the issue gives no number)
FILTERS_TARGET_MS = 3.0  # issue 14: all filter rule sets together, CPU ms per MiB of text, one thread
OVERHEAD_BUDGET_MS = 4.0  # issue 12: all of prep's CPU per MiB beyond the pipeline ceiling's work, features included
COLORS = {"ceiling": "#888888", "tokenizers": "#1f77b4", "tiktoken": "#17becf", "peer": "#ff7f0e"}
SPLIT_COLORS = {"tokenize": "#1f77b4", "features": "#2ca02c", "transport": "#9467bd", "other": "#8c564b",
                "idle": "#dddddd"}


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class Corpus:
    """One input of the bench: a directory of JSON Lines files (or one file) and its size."""

    path: Path
    text_bytes: int
    documents: int
    files: int


def read_source(corpus: Path) -> list[tuple[str, pa.Table]]:
    """Every document of every input file (any format prep reads), as (name, table of id, text).

    Empty and whitespace-only texts are left out: prep filters them by design, so every
    variant gets the same documents to tokenize.
    """
    from prep.io.sources import expand_inputs, iter_chunks

    tables = []
    for f in expand_inputs([str(corpus)]):
        batches = [c.batch.select(["id", "text"]) for c in iter_chunks([f]) if c.batch.num_rows]
        if batches:
            table = pa.Table.from_batches(batches)
            table = table.filter(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table.column("text"))), 0))
            tables.append((Path(f.display).name.split(".")[0] or "input", table.combine_chunks()))
    if not tables:
        raise UserError(f"--corpus {corpus}: no documents found")
    return tables


def write_jsonl(path: Path, ids: Sequence[str], texts: Sequence[str]) -> None:
    """The plain JSON Lines every variant reads (no decompression, so no variant pays for it)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in zip(ids, texts,
                                                                                                  strict=True))


def _describe(path: Path, tables: Sequence[pa.Table]) -> Corpus:
    texts = [t.column("text") for t in tables]
    size = sum(int(pc.sum(pc.binary_length(c)).as_py() or 0) for c in texts)
    return Corpus(path, size, sum(len(c) for c in texts), len(tables))


def make_slice(source: list[tuple[str, pa.Table]], mb: float, dest: Path) -> tuple[Corpus, list[pa.Table]]:
    """The first documents of every file, each file giving (at least) the same fraction of its text: mb MB."""
    dest.mkdir(parents=True, exist_ok=True)
    sizes = [pc.binary_length(t.column("text")).to_numpy() for _, t in source]
    share = min(1.0, mb * 1e6 / max(1, sum(int(s.sum()) for s in sizes)))
    taken = []
    for k, ((name, table), size) in enumerate(zip(source, sizes, strict=True)):
        rows = len(table) if share >= 1 else int(np.searchsorted(np.cumsum(size), share * size.sum())) + 1
        part = table.slice(0, rows)
        write_jsonl(dest / f"{k:03d}_{name}.jsonl", part.column("id").to_pylist(), part.column("text").to_pylist())
        taken.append(part)
    return _describe(dest, taken), taken


def make_tiny(source: list[tuple[str, pa.Table]], count: int, dest: Path) -> Corpus:
    """`count` one-line documents of 1..200 bytes, drawn (seeded) from the lines of every file."""
    lines = pa.chunked_array([pc.list_flatten(pc.split_pattern(t.column("text"), "\n")) for _, t in source])
    lines = pc.utf8_trim_whitespace(lines)
    size = pc.binary_length(lines)
    lines = lines.filter(pc.and_(pc.greater(size, 0), pc.less_equal(size, TINY_MAX_BYTES)))
    if len(lines) == 0:
        raise UserError("the corpus has no short lines to make tiny documents from")
    order = np.resize(np.random.default_rng(0).permutation(len(lines)), count)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "tiny.jsonl"
    texts = lines.take(pa.array(order)).combine_chunks()
    write_jsonl(path, [f"tiny-{i}" for i in range(count)], texts.to_pylist())
    return _describe(dest, [pa.table({"text": texts})])


def make_huge(slice_tables: list[pa.Table], mb: float, dest: Path) -> Corpus:
    """One document of `mb` MB: the slice's texts joined by blank lines, repeated as needed."""
    joined = "\n\n".join(t for table in slice_tables for t in table.column("text").to_pylist()).encode()
    target = int(mb * 1e6)
    data = (joined * (target // max(1, len(joined)) + 1))[:target]
    text = data.decode("utf-8", errors="ignore")
    dest.mkdir(parents=True, exist_ok=True)
    write_jsonl(dest / "huge.jsonl", ["huge-0"], [text])
    return _describe(dest, [pa.table({"text": [text]})])


def make_scaled(base: Corpus, factor: int, dest: Path) -> Corpus:
    """`factor` hard-linked copies of the slice: factor x the data, no extra disk."""
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(factor):
        for f in sorted(base.path.glob("*.jsonl")):
            target = dest / f"{k}-{f.name}"
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)
    return Corpus(dest, base.text_bytes * factor, base.documents * factor, base.files * factor)


# ---------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One thing to time. Its tokens must be `scale` x the reference ceiling's on `base`."""

    name: str
    scenario: str
    kind: str  # ceiling | pipeline | prep | peer
    corpus: str  # key of the bench's corpora: main, tiny, huge, scaled
    backend: str = "tokenizers"
    workers: int = 1
    router: str | None = None
    peer: str | None = None
    base: str = ""  # the corpus whose ceiling this variant is measured against (default: its own)
    scale: int = 1
    formats: tuple[str, ...] = ()  # binary formats written besides Parquet
    features: str | None = None  # prep run --features (None: the pipeline's own, all of them)

    @property
    def reference(self) -> str:
        return self.base or self.corpus


def scaling_workers(workers: int) -> list[int]:
    """The worker counts of the scaling table below N (which every router runs at): powers of two."""
    return [2**k for k in range(workers.bit_length()) if 2**k < workers]


def plan(scenarios: Sequence[str], backends: Sequence[str], routers: Sequence[str], peers: Sequence[str],
         workers: int, memory_factor: int) -> list[Variant]:
    """Every variant of the chosen scenarios, once each, in a stable order."""
    out: dict[str, Variant] = {}

    def add(v: Variant) -> None:
        out.setdefault(v.name, v)

    def ceiling(scenario: str, corpus: str, backend: str, w: int = 1, kind: str = "ceiling") -> None:
        label = ("1 thread" if kind == "ceiling" else "1 process") if w == 1 else f"{w} processes"
        add(Variant(f"{kind} {backend} {label}{_suffix(corpus)}", scenario, kind, corpus, backend, w))

    def prep(scenario: str, corpus: str, backend: str, w: int, router: str, base: str = "", scale: int = 1):
        add(Variant(f"prep {backend} w{w} {router}{_suffix(corpus, scale)}", scenario, "prep", corpus, backend, w,
                    router, base=base, scale=scale))

    for scenario in scenarios:
        if scenario in ("filters", "feed"):  # measured in this process (filter_costs, feed_rate): no variant
            continue
        corpus = {"main": "main", "memory": "main", "tiny": "tiny", "huge": "huge"}[scenario]
        for backend in backends:
            ceiling(scenario, corpus, backend)
            if scenario == "main" and workers > 1:
                ceiling(scenario, corpus, backend, workers)
            if scenario == "main":  # read -> parse -> tokenize -> write, one thread, and N at once
                ceiling(scenario, corpus, backend, 1, "pipeline")
                if workers > 1:
                    ceiling(scenario, corpus, backend, workers, "pipeline")
        for backend in backends:
            if scenario == "main":
                for w in scaling_workers(workers):
                    prep(scenario, corpus, backend, w, routers[0])
                for router in routers:
                    prep(scenario, corpus, backend, workers, router)
            else:
                prep(scenario, corpus, backend, workers, routers[0])
            if scenario == "memory":
                prep(scenario, "scaled", backend, workers, routers[0], base="main", scale=memory_factor)
        if scenario == "main":  # the cost of the binary formats: the last prep run again, writing them too
            add(Variant(f"prep {backends[0]} w{workers} {routers[0]} +megatron+llmc", scenario, "prep", corpus,
                        backends[0], workers, routers[0], formats=BINARY_FORMATS))
            add(Variant(f"prep {backends[0]} w{workers} {routers[0]} --features none", scenario, "prep", corpus,
                        backends[0], workers, routers[0], features="none"))
            for peer in peers:
                add(Variant(f"{peer} w{workers}", scenario, "peer", corpus, "tokenizers", workers, peer=peer))
    return list(out.values())


def _suffix(corpus: str, scale: int = 1) -> str:
    return {"main": "", "tiny": " tiny", "huge": " huge"}.get(corpus, f" x{scale}")


# ------------------------------------------------------------------------------------- measuring
@dataclass
class Measured:
    """One child process tree, from start to exit."""

    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    peak_pss_mb: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    worker_cpu_s: list[float] = field(default_factory=list)
    peak_rss_by_role_mb: dict[str, float] = field(default_factory=dict)  # each process's own peak, summed by role


def _roles(procs: dict[int, dict], root: int, prep: bool) -> dict[int, str]:
    """Name the processes of a tree: prep's writer is the first child of its forkserver, then workers."""
    servers = {pid for pid, p in procs.items() if p["ppid"] == root and "forkserver" in p["cmdline"]}
    roles = {pid: ("helper" if pid in servers or "resource_tracker" in p["cmdline"] else "child")
             for pid, p in procs.items()}
    roles[root] = "coordinator" if prep else "main"
    if prep:
        forked = sorted((p["create"], pid) for pid, p in procs.items() if p["ppid"] in servers)
        for k, (_, pid) in enumerate(forked):
            roles[pid] = "writer" if k == 0 else "worker"
    return roles


def measure(cmd: Sequence[str], env: dict[str, str], timeout: float, prep: bool = False) -> Measured:
    """Run `cmd`, sampling RSS (sum over the tree), PSS and CPU of every process in its tree."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env)
        root = psutil.Process(proc.pid)
        procs: dict[int, dict] = {}
        handles = {proc.pid: root}
        peak_rss = peak_pss = 0
        next_children = next_pss = 0.0
        while True:
            try:
                proc.wait(timeout=RSS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.perf_counter()
            if now - started > timeout:
                _kill_tree(root)
                proc.wait()
                break
            if now >= next_children:
                try:
                    for child in root.children(recursive=True):
                        handles.setdefault(child.pid, child)
                except psutil.Error:
                    pass
                next_children = now + CHILDREN_EVERY_S
            rss, pss, take_pss = 0, 0, now >= next_pss
            for pid, handle in list(handles.items()):
                try:
                    with handle.oneshot():
                        memory = handle.memory_full_info() if take_pss else handle.memory_info()
                        cpu = handle.cpu_times()
                        if pid not in procs:
                            procs[pid] = {"ppid": handle.ppid(), "create": handle.create_time(),
                                          "cmdline": " ".join(handle.cmdline())}
                        elif procs[pid]["ppid"] == proc.pid:  # the forkserver may first be seen before its exec
                            procs[pid]["cmdline"] = " ".join(handle.cmdline()) or procs[pid]["cmdline"]  # a zombie's
                            # is empty: prep kills its idle forkserver as it exits
                except psutil.Error:
                    handles.pop(pid)
                    continue
                procs[pid]["cpu"] = cpu.user + cpu.system
                procs[pid]["rss"] = max(procs[pid].get("rss", 0), memory.rss)
                rss += memory.rss
                pss += getattr(memory, "pss", 0)
            peak_rss = max(peak_rss, rss)
            if take_pss:
                peak_pss, next_pss = max(peak_pss, pss), now + PSS_EVERY_S
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    roles = _roles(procs, proc.pid, prep)
    cpu: dict[str, float] = {}
    rss_by_role: dict[str, float] = {}
    for pid, p in procs.items():
        cpu[roles[pid]] = cpu.get(roles[pid], 0.0) + p.get("cpu", 0.0)
        rss_by_role[roles[pid]] = rss_by_role.get(roles[pid], 0.0) + p.get("rss", 0) / 2**20
    workers = [procs[pid].get("cpu", 0.0) for _, pid in sorted((p["create"], pid) for pid, p in procs.items()
                                                               if roles[pid] == "worker")]
    code = proc.returncode if wall <= timeout else -9
    return Measured(wall, code, stdout, stderr, peak_rss / 2**20, peak_pss / 2**20,
                    {k: round(v, 3) for k, v in cpu.items()}, [round(c, 3) for c in workers],
                    {k: round(v, 1) for k, v in rss_by_role.items()})


def _kill_tree(root: psutil.Process) -> None:
    try:
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _env(threads: int) -> dict[str, str]:
    """A clean environment: the tokenizer thread count set on purpose, never inherited; no network."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM")}
    env.update(RAYON_NUM_THREADS=str(threads), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    return env


def read_prep_tokens(out: Path) -> int:
    """Tokens prep says it wrote (its manifest's counts)."""
    return int(json.loads((out / "_manifest.json").read_text(encoding="utf-8"))["counts"]["tokens"])


def run_variant(v: Variant, corpus: Corpus, tokenizer: Path, out: Path, timeout: float) -> dict:
    """Run one variant once; return its record (timings, tokens, memory, prep's accounting)."""
    py = sys.executable
    record: dict = {"ok": True, "error": None, "loadavg_1m": round(os.getloadavg()[0], 2)}
    if v.kind in ("ceiling", "pipeline"):
        cmd = [py, "-m", "prep.tools.bench_peers", f"{v.kind}-{v.backend}", "--input", str(corpus.path),
               "--tokenizer", str(tokenizer), "--batch-bytes", str(CHUNK_BYTES), "--workers", str(v.workers)]
        cmd += ["--output", str(out)] if v.kind == "pipeline" else []
        env = _env(1)
    elif v.kind == "prep":
        cmd = [py, "-m", "prep", "run", "--input", str(corpus.path), "--output", str(out), "--tokenizer",
               str(tokenizer), "--workers", str(v.workers), "--router", v.router, "--backend", v.backend,
               "--overwrite", "--no-progress", "--chunk-timeout", str(timeout)]
        if v.corpus == "huge":  # its one document may pass the default limit; JSON escapes at most 6x the text
            cmd += ["--max-document-bytes", str(6 * corpus.text_bytes + 2**20)]
        cmd += [a for f in ("parquet", *v.formats) for a in ("--format", f)] if v.formats else []
        cmd += ["--features", v.features] if v.features else []
        env = _env(1)
    else:
        cmd = [py, "-m", "prep.tools.bench_peers", v.peer, "--input", str(corpus.path), "--tokenizer", str(tokenizer),
               "--workers", str(v.workers), "--output", str(out)]
        env = _env(v.workers if v.peer == "hf-threads" else 1)
    m = measure(cmd, env, timeout, prep=v.kind == "prep")
    record.update(wall_s=round(m.wall_s, 3), seconds=m.wall_s, peak_rss_mb=round(m.peak_rss_mb, 1),
                  peak_pss_mb=round(m.peak_pss_mb, 1), cpu_s=m.cpu_s, peak_rss_by_role_mb=m.peak_rss_by_role_mb)
    if m.returncode != 0:
        tail = " | ".join(m.stderr.strip().splitlines()[-3:])
        record.update(ok=False, error=f"exit code {m.returncode}: {tail}", tokens=None)
        return record
    try:
        if v.kind in ("ceiling", "pipeline"):
            result = json.loads(m.stdout.strip().splitlines()[-1])
            record.update(seconds=result["seconds"], encode_cpu_s=result["cpu_seconds"], tokens=result["tokens"])
            if v.kind == "pipeline":  # what it wrote is what counts
                record["tokens"] = output_tokens(v.kind, out)
        elif v.kind == "prep":
            manifest = json.loads((out / "_manifest.json").read_text(encoding="utf-8"))
            routing = manifest["routing"]
            timings = manifest["timings"]
            record.update(engine_cpu_s={role: timings.get(f"{role}_cpu_s") for role in ("coordinator", "writer")})
            record.update(tokens=read_prep_tokens(out), engine_wall_s=timings["wall_s"],
                          backend_used=manifest["tokenizer"]["backend"], router_used=routing["router"],
                          imbalance=routing.get("imbalance"), worker_cpu_s=m.worker_cpu_s,
                          workers=[_split(w) for w in routing["workers"]])
            if record["backend_used"].split("-")[0] != v.backend:  # "tokenizers-1": tokenizers 1.x
                record.update(ok=False, error=f"asked for backend {v.backend}, prep used {record['backend_used']}")
        else:
            record["tokens"] = output_tokens(v.peer, out)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        record.update(ok=False, error=f"unreadable result: {exc}", tokens=None)
    record["seconds"] = round(record["seconds"], 4)
    return record


_PARTS = ("parse_s", "filter_s", "tokenize_s", "features_s", "transport_s")  # the named parts of busy time


def _per_mib(summary: dict, text_bytes: int) -> str:
    """CPU ms per MiB of text of each stage once the engine runs (the overhead budget at a glance; the workers'
    parts are their CPU seconds), then the CPU seconds that the coordinator, the writer and the forkserver spent
    besides: starting and finishing, which a bigger input would not add to."""
    mib = text_bytes / 2**20 or 1.0
    cpu, engine = summary["cpu_s"], summary.get("engine_cpu_s", {})
    parts = [engine.get("coordinator", cpu.get("coordinator", 0.0))]
    parts += [sum(w.get(k, 0.0) for w in summary["workers"]) for k in ("parse_s", "tokenize_s", "features_s",
                                                                        "transport_s")]
    parts.append(engine.get("writer", cpu.get("writer", 0.0)))
    fixed = sum(cpu.get(role, 0.0) for role in ("coordinator", "writer", "helper")) - parts[0] - parts[-1]
    return ", ".join(f"{1000 * p / mib:.1f}" for p in parts) + f"; start and finish {fixed:.2f} s"


def _split(w: dict) -> dict:
    """One worker's time, from prep's accounting: busy = tokenize + features + transport + other."""
    keys = ("busy_s", *_PARTS, "idle_s", "queue_wait_s")
    split = {k: w.get(k, 0.0) for k in keys} | {"chunks": w.get("chunks", 0), "bytes": w.get("bytes", 0)}
    split["other_s"] = max(0.0, split["busy_s"] - sum(split[k] for k in _PARTS))
    return split


# ------------------------------------------------------------------------------------- the bench
@dataclass
class BenchOptions:
    corpus: Path | None = None
    mb: float = 50.0
    tokenizer: Path = DEFAULT_TOKENIZER
    workers: int = 0  # 0: the CPU count
    repeats: int = 3
    scenarios: tuple[str, ...] = ("main",)
    routers: tuple[str, ...] = BENCH_ROUTERS
    backends: tuple[str, ...] = BACKENDS
    peers: tuple[str, ...] = PEERS
    tiny_docs: int = 1_000_000
    huge_mb: float = 100.0
    memory_factor: int = 4
    workdir: Path | None = None
    keep: bool = False
    timeout: float = 3600.0
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


def _available(opts: BenchOptions) -> tuple[list[str], list[str], list[str]]:
    """Backends and peers that can run here; a note for each one left out."""
    notes, backends, peers = [], [], []
    for backend in opts.backends:
        if backend == "tiktoken":
            try:
                from prep.text import tiktoken_backend

                tiktoken_backend.convert(opts.tokenizer)
            except Exception as exc:  # Unsupported, or the backend is not usable in this checkout
                notes.append(f"tiktoken backend left out: {str(exc).splitlines()[0] if str(exc) else exc!r}")
                continue
        backends.append(backend)
    for peer in opts.peers:
        if peer == "datatrove" and (missing := datatrove_missing()):
            notes.append(f"datatrove peer left out: {' and '.join(missing)} not installed (pip install "
                         f"{' '.join(missing)} to include it)")
            continue
        peers.append(peer)
    return backends, peers, notes


def _check(opts: BenchOptions) -> None:
    bad = [s for s in opts.scenarios if s not in SCENARIOS] + [r for r in opts.routers if r not in ROUTERS] + [
        b for b in opts.backends if b not in BACKENDS] + [p for p in opts.peers if p not in PEERS]
    if bad:
        raise UserError(f"unknown name(s): {', '.join(bad)}; scenarios: {', '.join(SCENARIOS)}; routers: "
                        f"{', '.join(ROUTERS)}; backends: {', '.join(BACKENDS)}; peers: {', '.join(PEERS)}")
    if opts.mb <= 0 or opts.huge_mb <= 0 or opts.repeats < 1 or opts.tiny_docs < 1 or opts.memory_factor < 1:
        raise UserError("--mb, --huge-mb, --repeats, --tiny-docs and --memory-factor must be positive")
    if not opts.routers or not opts.backends:
        raise UserError("give at least one router and one backend")
    if not opts.tokenizer.is_file():
        raise UserError(f"tokenizer not found: {opts.tokenizer} (pass --tokenizer PATH)")
    corpus = opts.corpus or DEFAULT_CORPUS
    if not corpus.exists():
        raise UserError(f"corpus not found: {corpus} (pass --corpus PATH)")


def warm_up(dest: Path) -> None:
    """Before anything is timed, what a user's second run finds: prep's modules compiled to bytecode (as pip
    compiles an installed package's; under PYTHONDONTWRITEBYTECODE with none written, every process compiled
    them again, ~0.06 s of the forkserver's imports) and numba's cache of prep's compiled code filled (compiling
    it takes seconds, once per install or edit: the first run timed, and the filters' load time, paid for it)."""
    import compileall

    from prep.engines.local.forkserver import PRELOAD_COMPILED

    compileall.compile_dir(str(Path(__file__).resolve().parents[1]), quiet=1)
    dest.mkdir(parents=True, exist_ok=True)
    load_all = "import " + ", ".join(PRELOAD_COMPILED.values())  # what a forkserver loads, every part of it
    subprocess.run([sys.executable, "-c", load_all], check=True, capture_output=True, cwd=dest, timeout=600)


def run_bench(opts: BenchOptions) -> dict:
    """Build the inputs, run every variant `repeats` times interleaved, and summarise."""
    _check(opts)
    workers = opts.workers or os.cpu_count() or 1
    backends, peers, notes = _available(opts)
    if not backends:
        raise UserError("no backend can run: " + "; ".join(notes))
    variants = plan(opts.scenarios, backends, opts.routers, peers, workers, opts.memory_factor)
    work = Path(tempfile.mkdtemp(prefix="prep-bench-", dir=opts.workdir))
    try:
        opts.log(f"bench: building inputs in {work}")
        warm_up(work / "warm-up")
        source = read_source(opts.corpus or DEFAULT_CORPUS)
        corpora: dict[str, Corpus] = {}
        corpora["main"], slice_tables = make_slice(source, opts.mb, work / "main")
        if "tiny" in opts.scenarios:
            corpora["tiny"] = make_tiny(source, opts.tiny_docs, work / "tiny")
        if "huge" in opts.scenarios:
            corpora["huge"] = make_huge(slice_tables, opts.huge_mb, work / "huge")
        if "memory" in opts.scenarios:
            corpora["scaled"] = make_scaled(corpora["main"], opts.memory_factor, work / "scaled")
        filters = filter_costs(slice_tables, opts.repeats) if "filters" in opts.scenarios else None
        feed = feed_rate(corpora["main"], opts.repeats) if "feed" in opts.scenarios else None
        del source, slice_tables
        for key, c in corpora.items():
            opts.log(f"bench: {key}: {c.text_bytes / 1e6:.1f} MB of text, {c.documents:,} documents, {c.files} files")
        runs: dict[str, list[dict]] = {v.name: [] for v in variants}
        total = opts.repeats * len(variants)
        for r in range(opts.repeats):
            shift = r * len(variants) // opts.repeats  # a different order each round: no variant always first
            for k, v in enumerate(variants[shift:] + variants[:shift]):
                out = work / "out"
                record = run_variant(v, corpora[v.corpus], opts.tokenizer, out, opts.timeout)
                record["repeat"] = r
                runs[v.name].append(record)
                shutil.rmtree(out, ignore_errors=True)
                done = r * len(variants) + k + 1
                speed = corpora[v.corpus].text_bytes / record["seconds"] / 1e6 if record["ok"] else 0.0
                failed = "" if record["ok"] else f"  FAILED {record['error']}"
                opts.log(f"[{done}/{total}] {v.name}: {record['seconds']:.2f} s, {speed:.2f} MB/s, "
                         f"peak {record['peak_rss_mb']:.0f} MB{failed}")
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = summarize(variants, runs, corpora, opts, workers, notes)
    if filters:
        result["filters"] = filters
    if feed:
        result["feed"] = feed
    result["targets"] = targets(result)
    return result


# The text features by what they need computed (`filter_costs`): what each group costs the default pipeline
FEATURE_GROUPS = {
    "classes": ["num_chars", "frac_alpha", "frac_digit", "frac_upper", "frac_whitespace", "frac_punct",
                "frac_non_ascii", "frac_cjk"],
    "words": ["num_words", "mean_word_length"],
    "lines": ["num_lines", "frac_dup_lines"],
    "top n-grams": ["top_2gram_frac", "top_3gram_frac", "top_4gram_frac"],
    "content_hash": ["content_hash"],
}


def decoding_only() -> dict[str, dict]:
    """Settings of every rule set under which each one skips every text (no text has a share of CJK characters
    below 0): what is left is the work every rule set shares, decoding the text and classing its characters."""
    from prep.text.features import FEATURES
    from prep.text.filters import RULE_SETS, check_filters

    return check_filters({name: {"skip_frac_cjk": -1} for name in RULE_SETS}, FEATURES)


def filter_costs(tables: Sequence[pa.Table], repeats: int) -> dict:
    """CPU milliseconds per MiB of text of each filter rule set alone, of all of them at once, of decoding alone
    (the part they all share), of the text features and of each group of them (`FEATURE_GROUPS`), over the
    slice in prep's 1 MiB chunks (median over repeats, this process, one thread); and the seconds a process
    spends once to load the rules' compiled code (a worker does it at its start)."""
    from prep.text.features import FEATURES, compute_features
    from prep.text.filters import RULE_SETS, check_filters, prepare, text_verdict

    prepare()
    start = time.perf_counter()
    prepare(compiled=True)
    load_s = time.perf_counter() - start
    chunks = []
    for table in tables:
        texts = table.column("text").combine_chunks()
        sizes = np.cumsum(pc.binary_length(texts).to_numpy())
        cuts = np.searchsorted(sizes, np.arange(CHUNK_BYTES, sizes[-1] if len(sizes) else 0, CHUNK_BYTES))
        for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(texts)])), strict=True):
            if b > a:
                chunks.append(texts.slice(int(a), int(b - a)))
    mib = sum(int(pc.sum(pc.binary_length(c)).as_py() or 0) for c in chunks) / 2**20
    text_features = [f for f in FEATURES if f not in ("num_tokens", "chars_per_token", "unique_token_ratio")]
    no_ids = [pa.array([[]] * len(c), pa.list_(pa.uint32())) for c in chunks]  # made once, not timed

    def rules(filters: dict) -> Callable[[int], object]:
        return lambda k: text_verdict(chunks[k], filters)

    def features(names: list[str]) -> Callable[[int], object]:
        return lambda k: compute_features(chunks[k], no_ids[k], names)

    jobs = {name: rules(check_filters({name: {}}, FEATURES)) for name in RULE_SETS}
    jobs["all rule sets"] = rules(check_filters(dict.fromkeys(RULE_SETS, {}), FEATURES))
    jobs["decoding alone (every rule set skips every text)"] = rules(decoding_only())
    jobs["features (text ones)"] = features(text_features)
    jobs.update({f"features: {group}": features(names) for group, names in FEATURE_GROUPS.items()})
    runs: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):  # interleaved: a burst of load on the machine falls on every job alike
        for name, job in jobs.items():
            start = time.process_time()
            for k in range(len(chunks)):
                job(k)
            runs[name].append(round((time.process_time() - start) * 1000 / mib, 2))
    return {"mib": round(mib, 2), "chunks": len(chunks), "load_s": round(load_s, 2),
            "cpu_ms_per_mib": {name: statistics.median(r) for name, r in runs.items()}, "cpu_ms_per_mib_runs": runs}


def feed_rate(corpus: Corpus, repeats: int) -> dict:
    """How fast the coordinator feeds workers with a stage that does nothing: its whole per-chunk work (cut the
    input into raw chunks, digest each for --resume, write it into a shared-memory slot), in this process,
    over the slice's JSON Lines (median over repeats, wall and CPU)."""
    from prep.core.allocator import reuse_freed_buffers
    from prep.engines.local.coordinator import new_shm_prefix
    from prep.engines.local.transport import SlotPool
    from prep.io.sources import expand_inputs, iter_chunks
    from prep.io.verify import chunk_digest

    reuse_freed_buffers()  # as `prep run` sets its coordinator
    files = expand_inputs([str(corpus.path)])
    size = sum(f.size for f in files)
    pool = SlotPool(new_shm_prefix() + "feed", 2, 2 * CHUNK_BYTES + 2**18, create=True)
    walls, cpus, chunks = [], [], 0
    try:
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            for chunks, chunk in enumerate(iter_chunks(files, chunk_bytes=CHUNK_BYTES, raw=True), 1):
                chunk_digest(chunk)
                pool.write(chunks % 2, chunk.batch)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    finally:
        pool.close()
    return {"mib": round(size / 2**20, 2), "chunks": chunks, "gb_s": round(size / statistics.median(walls) / 1e9, 3),
            "gb_s_runs": _stat([round(size / w / 1e9, 3) for w in walls]),
            "cpu_ms_per_mib": round(statistics.median(cpus) * 1000 / (size / 2**20), 3)}


# ------------------------------------------------------------------------------------- summary
def _stat(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _median_split(records: list[dict]) -> list[dict]:
    """Per worker, the median over repeats of each accounting figure."""
    per_run = [r["workers"] for r in records if r.get("workers")]
    if not per_run:
        return []
    count = min(len(w) for w in per_run)
    return [{k: round(statistics.median(run[j][k] for run in per_run), 3) for k in per_run[0][j]}
            for j in range(count)]


def summarize(variants: list[Variant], runs: dict[str, list[dict]], corpora: dict[str, Corpus],
              opts: BenchOptions, workers: int, notes: list[str]) -> dict:
    """Speeds, fractions of the ceiling, ratios to peers, memory and token checks per variant."""
    problems: list[str] = []
    ceilings: dict[str, dict] = {}
    reference_tokens: dict[str, int] = {}
    parallel: dict[tuple[str, str, int], float] = {}  # (corpus, backend, N) -> N processes' MB/s
    pipelines: dict[tuple[str, str, int], float] = {}  # (corpus, backend, N) -> N pipeline processes' MB/s
    for v in variants:
        ok = [r for r in runs[v.name] if r["ok"]]
        c = corpora[v.corpus]
        if v.kind == "pipeline" and ok:  # its token count is checked below, like every variant's
            pipelines[(v.corpus, v.backend, v.workers)] = statistics.median(
                c.text_bytes / r["seconds"] / 1e6 for r in ok)
        if v.kind != "ceiling" or not ok:
            continue
        if v.workers > 1:
            speed = statistics.median(c.text_bytes / r["seconds"] / 1e6 for r in ok)
            parallel[(v.corpus, v.backend, v.workers)] = speed
            continue
        ceilings.setdefault(v.corpus, {})[v.backend] = {
            "mb_s": statistics.median(c.text_bytes / r["seconds"] / 1e6 for r in ok),
            "cpu_mb_s": statistics.median(c.text_bytes / r["encode_cpu_s"] / 1e6 for r in ok),
            "docs_s": statistics.median(c.documents / r["seconds"] for r in ok),
            "tokens": ok[0]["tokens"],
        }
    for (corpus, backend, n), speed in parallel.items():
        ceilings.setdefault(corpus, {}).setdefault(backend, {})[f"processes_{n}_mb_s"] = speed
    for (corpus, backend, n), speed in pipelines.items():
        key = "pipeline_mb_s" if n == 1 else f"pipeline_processes_{n}_mb_s"
        ceilings.setdefault(corpus, {}).setdefault(backend, {})[key] = speed
    for corpus, by_backend in ceilings.items():
        ref = "tokenizers" if "tokenizers" in by_backend else next(iter(by_backend))
        if by_backend[ref].get("tokens") is not None:
            reference_tokens[corpus] = by_backend[ref]["tokens"]

    results = []
    speeds: dict[str, list[float]] = {}  # MB/s of each variant's good runs
    for v in variants:
        c = corpora[v.corpus]
        ceiling = ceilings.get(v.reference, {}).get(v.backend, {}).get("mb_s")
        ceiling_cpu = ceilings.get(v.reference, {}).get(v.backend, {}).get("cpu_mb_s")
        cores = v.workers
        together = parallel.get((v.reference, v.backend, v.workers))
        pipelines_together = pipelines.get((v.reference, v.backend, v.workers))
        expected = reference_tokens.get(v.reference)
        expected = None if expected is None else expected * v.scale
        records = runs[v.name]
        for r in records:
            r["tokens_ok"] = None if r.get("tokens") is None or expected is None else r["tokens"] == expected
            if r["tokens_ok"] is False:
                r.update(ok=False, error=f"WRONG TOKEN COUNT: {r['tokens']:,} != reference ceiling's {expected:,}")
            if not r["ok"]:
                problems.append(f"{v.name} (repeat {r['repeat']}): {r['error']}")
        ok = [r for r in records if r["ok"]]
        mb_s = speeds[v.name] = [c.text_bytes / r["seconds"] / 1e6 for r in ok]
        summary = {
            "mb_s": _stat(mb_s),
            "tokens_s": _stat([r["tokens"] / r["seconds"] for r in ok]),
            "docs_s": _stat([c.documents / r["seconds"] for r in ok]),
            "ceiling_mb_s_per_core": ceiling,
            "fraction_of_ceiling": _stat([s / (cores * ceiling) for s in mb_s]) if ceiling else None,
            # against N one-thread processes run at once: prep's own overhead, without the machine's scaling
            "fraction_of_parallel_ceiling": _stat([s / together for s in mb_s])
            if together and v.kind != "ceiling" else None,
            # against N read -> parse -> tokenize -> write processes run at once (1: one of them)
            "fraction_of_parallel_pipelines": _stat([s / pipelines_together for s in mb_s])
            if pipelines_together and v.kind in ("prep", "peer") else None,
            "peak_rss_mb": max((r["peak_rss_mb"] for r in records), default=None),
            "peak_rss_mb_runs": _stat([r["peak_rss_mb"] for r in records]),
            "peak_pss_mb": max((r["peak_pss_mb"] for r in records), default=None),
            "tokens": ok[0]["tokens"] if ok else None,
            "tokens_expected": expected,
            "tokens_ok": None if all(r["tokens_ok"] is None for r in records)
            else all(r["tokens_ok"] is not False for r in records),
            "seconds": _stat([r["seconds"] for r in ok]),
            "failed_runs": sum(not r["ok"] for r in records),
            "cpu_s": {k: statistics.median(r["cpu_s"].get(k, 0.0) for r in ok) for k in
                      sorted({k for r in ok for k in r["cpu_s"]})},
            "cpu_total_s": _stat([sum(r["cpu_s"].values()) for r in ok]),
            # the tokenizer's own CPU need (bytes / one thread's CPU speed) over all CPU the process tree spent:
            # an overhead measure that other work on the machine does not move
            "cpu_efficiency": _stat([c.text_bytes / 1e6 / ceiling_cpu / sum(r["cpu_s"].values()) for r in ok])
            if ceiling_cpu and v.kind != "ceiling" else None,
            "loadavg_1m": statistics.median(r["loadavg_1m"] for r in records) if records else None,
            "peak_rss_by_role_mb": {k: max(r["peak_rss_by_role_mb"].get(k, 0.0) for r in records) for k in
                                    sorted({k for r in records for k in r.get("peak_rss_by_role_mb", {})})},
        }
        if v.kind == "prep":
            summary["engine_wall_s"] = _stat([r["engine_wall_s"] for r in ok])
            summary["fixed_cost_s"] = _stat([r["seconds"] - r["engine_wall_s"] for r in ok])  # start and finish
            summary["engine_fraction_of_ceiling"] = _stat(
                [c.text_bytes / r["engine_wall_s"] / 1e6 / (cores * ceiling) for r in ok]) if ceiling else None
            # the engine alone against N pipelines, as issue 12 measured it ("prep's engine reaches 11.9 MB/s on 2
            # cores (0.16 of 2 x 37)"): the pipeline ceilings are timed once their tokenizer is loaded
            summary["engine_fraction_of_parallel_pipelines"] = _stat(
                [c.text_bytes / r["engine_wall_s"] / 1e6 / pipelines_together for r in ok]
            ) if pipelines_together else None
            summary["engine_fraction_of_parallel_ceiling"] = _stat(
                [c.text_bytes / r["engine_wall_s"] / 1e6 / together for r in ok]) if together else None
            summary["workers"] = _median_split(ok)
            summary["engine_cpu_s"] = {role: statistics.median(r["engine_cpu_s"][role] for r in ok)
                                       for role in ("coordinator", "writer")
                                       if ok and all(r["engine_cpu_s"][role] is not None for r in ok)}
            summary["worker_cpu_s"] = [statistics.median(cs) for cs in zip(*(r["worker_cpu_s"] for r in ok),
                                                                           strict=False)] if ok else []
        results.append({**asdict(v), "runs": records, "summary": summary})

    peer_speed = {r["peer"]: r["summary"]["mb_s"]["median"] for r in results
                  if r["kind"] == "peer" and r["summary"]["mb_s"]}
    for r in results:
        speed = r["summary"]["mb_s"]
        mine = speeds[r["name"]] if speed and r["scenario"] == "main" else []
        r["summary"]["vs_peers"] = {p: speed["median"] / s for p, s in peer_speed.items()} if mine else {}
        # each run against the peer's median speed: the ratio's spread (its median is the one above)
        r["summary"]["vs_peers_runs"] = {p: _stat([m / s for m in mine]) for p, s in peer_speed.items()} if mine else {}
    by_name = {r["name"]: r for r in results}
    for r in results:
        base = by_name.get(r["name"].split(" +")[0]) if r["formats"] else None
        if base and r["summary"]["mb_s"] and base["summary"]["mb_s"]:  # the binary formats' cost, by wall time
            cpu, base_cpu = r["summary"]["cpu_total_s"], base["summary"]["cpu_total_s"]  # and by CPU: load-proof
            r["summary"]["vs_parquet_only"] = {
                "base": base["name"], "speed_ratio": r["summary"]["mb_s"]["median"] / base["summary"]["mb_s"]["median"],
                "cpu_ratio": cpu["median"] / base_cpu["median"] if cpu and base_cpu else None}
    for r in results:
        base = by_name.get(r["name"].rsplit(" x", 1)[0]) if r["scale"] > 1 else None
        if base:  # memory against corpus size: the same run on the slice and on `scale` x the slice
            r["summary"]["memory_vs_1x"] = {"base": base["name"], **{
                f"{k}_ratio": r["summary"][k] / base["summary"][k] if base["summary"][k] else None
                for k in ("peak_rss_mb", "peak_pss_mb")}}
    machine = {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "python": platform.python_version(),
               "tokenizers": _tokenizers_version(),
               "platform": platform.platform(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "note": "shared with other work: runs are interleaved and repeated so noise shows as spread"}
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "log"}
    return {
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "options": options | {"workers": workers},
        "corpora": {k: asdict(c) | {"path": str(c.path)} for k, c in corpora.items()},
        "ceilings": ceilings,
        "variants": results,
        "notes": notes,
        "problems": problems,
    }


def targets(result: dict) -> list[dict]:
    """Issue 12's targets (and issue 14's filter budget) that this run measured, one row per variant that a target
    is about: the value (median and range over repeats), the threshold, and whether the median meets it (at the
    threshold counts as met).

    A target whose variant was not in the run is left out; one whose variant ran but gave no value (failed runs)
    is listed as not met. "prep[fast]" targets apply when the installed `tokenizers` is 1.x, the 0.2x one
    when it is 0.2x. Results written before these targets (no pipeline ceiling, no per-run figures) give fewer
    rows, not an error."""
    rows: list[dict] = []
    version = result["machine"].get("tokenizers") or ""
    fast = bool(version) and not version.startswith("0.")
    n = result["options"]["workers"]

    def add(target: str, variant: str, value: dict | None, threshold: float, at_least: bool = True) -> None:
        met = value is not None and (value["median"] >= threshold if at_least else value["median"] <= threshold)
        rows.append({"target": target, "variant": variant, "value": value, "threshold": threshold,
                     "at_least": at_least, "met": met})

    def parallel(s: dict, engine: bool = False) -> dict | None:  # x N one-thread ceilings at once; N = 1: one thread
        if engine:
            return s.get("engine_fraction_of_parallel_ceiling") or (
                s.get("engine_fraction_of_ceiling") if n == 1 else None)
        return s.get("fraction_of_parallel_ceiling") or (s["fraction_of_ceiling"] if n == 1 else None)

    for v in result["variants"]:
        s, name = v["summary"], v["name"]
        plain = v["kind"] == "prep" and not v["formats"] and v["scale"] == 1
        at_n = plain and v["scenario"] == "main" and v["workers"] == n
        if at_n and v["backend"] == "tokenizers" and fast:
            if v.get("features") is None:
                add("prep[fast], all features: x N pipeline ceilings at once", name,
                    s.get("fraction_of_parallel_pipelines"), PIPELINE_TARGET)
                add("prep[fast], all features, engine: x N pipeline ceilings at once", name,
                    s.get("engine_fraction_of_parallel_pipelines"), PIPELINE_TARGET)
                if any(p["peer"] == POOL_BATCH_PEER for p in result["variants"]):
                    add("prep[fast], all features, whole command: x the Pool + tokenizers 1.x peer", name,
                        s.get("vs_peers_runs", {}).get(POOL_BATCH_PEER), PEER_TARGET)
            elif v.get("features") == "none":
                add("prep[fast], --features none: x N pipeline ceilings at once", name,
                    s.get("fraction_of_parallel_pipelines"), NO_FEATURES_PIPELINE_TARGET)
                add("prep[fast], --features none, engine: x N pipeline ceilings at once", name,
                    s.get("engine_fraction_of_parallel_pipelines"), NO_FEATURES_PIPELINE_TARGET)
        if at_n and v.get("features") is None and v["backend"] == "tokenizers" and not fast and version:
            add("tokenizers 0.2x: x N one-thread ceilings at once", name, parallel(s), TOKENIZERS_0_TARGET)
            add("tokenizers 0.2x, engine: x N one-thread ceilings at once", name, parallel(s, True),
                TOKENIZERS_0_TARGET)
        if at_n and v.get("features") is None and v["backend"] == "tiktoken":
            add("tiktoken: x N one-thread ceilings at once", name, parallel(s), TIKTOKEN_TARGET)
            add("tiktoken, engine: x N one-thread ceilings at once", name, parallel(s, True), TIKTOKEN_TARGET)
        if plain and v["scenario"] == "tiny":
            add("10^6 one-line documents: x the ceiling's docs/s (workers x one thread)", name,
                s["fraction_of_ceiling"], TINY_TARGET)
        if at_n and v.get("features") is None:
            add("fixed cost: whole command minus the engine, s", name, s.get("fixed_cost_s"), FIXED_COST_TARGET_S,
                at_least=False)
    if result.get("filters"):  # issue 14's budget
        f = result["filters"]
        add("issue 14: all filter rule sets, CPU ms/MiB of text, one thread", "filters",
            _stat(f.get("cpu_ms_per_mib_runs", {}).get("all rule sets") or [f["cpu_ms_per_mib"]["all rule sets"]]),
            FILTERS_TARGET_MS, at_least=False)
    if result.get("feed"):
        feed = result["feed"]
        add("feed rate (--scenarios feed), GB/s", "feed", feed.get("gb_s_runs") or _stat([feed["gb_s"]]),
            FEED_TARGET_GB_S)
    for v in result["variants"]:
        s = v["summary"]
        if v["kind"] == "prep" and v["workers"] == 2 and v.get("features") is None and not v["formats"] and (
                v["scenario"] in ("main", "memory")):
            add("summed peak RSS of the process tree, 2 workers, MB", v["name"], s.get("peak_rss_mb_runs"),
                MEMORY_TARGET_MB, at_least=False)
            if (ratio := (s.get("memory_vs_1x") or {}).get("peak_rss_mb_ratio")) is not None:
                add(f"flat memory: peak RSS at {v['scale']}x the slice / at 1x", v["name"], _stat([ratio]),
                    MEMORY_FLAT_TARGET, at_least=False)
    return rows


def _tokenizers_version() -> str | None:
    """The installed `tokenizers`: 1.x is prep[fast], whose targets differ from the stable 0.2x's."""
    try:
        import tokenizers
    except ImportError:
        return None
    return tokenizers.__version__


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ------------------------------------------------------------------------------------- reporting
def _fmt(stat: dict | None, digits: int = 2, spread: bool = True) -> str:
    if not stat:
        return "—"
    text = f"{stat['median']:,.{digits}f}"
    return text + (f" [{stat['min']:,.{digits}f}–{stat['max']:,.{digits}f}]" if spread and stat["n"] > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_report(result: dict) -> str:
    """The terminal report: one table per scenario, then where prep's time went."""
    lines = [f"machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
             f"{result['machine']['note']}"]
    lines += [f"note: {n}" for n in result["notes"]]
    peers = sorted({v["peer"] for v in result["variants"] if v["kind"] == "peer"})
    if result.get("filters"):
        f = result["filters"]
        lines += ["", f"== filters and features: CPU ms per MiB of text, {f['mib']:.1f} MiB in {f['chunks']} chunks, "
                  f"one thread (budgets: all rules {FILTERS_TARGET_MS:g} ms/MiB; all of prep's work beyond parse, "
                  f"tokenize and encode, the features included, {OVERHEAD_BUDGET_MS:g})"]
        lines += _table(["work", "ms/MiB"], [[k, f"{v:.2f}"] for k, v in f["cpu_ms_per_mib"].items()])
        if "load_s" in f:
            lines.append(f"loading the rules' compiled code: {f['load_s']:.2f} s once per process (not in the above)")
    if result.get("feed"):
        f = result["feed"]
        lines += ["", f"== feed: the coordinator's work with a no-op stage (cut, digest, shared memory), "
                  f"{f['mib']:.1f} MiB of JSON Lines in {f['chunks']} chunks: {f['gb_s']:.2f} GB/s, "
                  f"{f['cpu_ms_per_mib']:.2f} CPU ms/MiB (target {FEED_TARGET_GB_S} GB/s)"]
    for scenario in SCENARIOS:
        chosen = [v for v in result["variants"] if v["scenario"] == scenario]
        if not chosen:
            continue
        corpus = result["corpora"][chosen[0]["corpus"]]
        lines += ["", f"== {scenario}: {corpus['text_bytes'] / 1e6:,.1f} MB of text, {corpus['documents']:,} "
                  f"documents, {corpus['files']} files; x ceiling = speed / (workers x one-thread speed of the "
                  "same backend); x N at once = speed / (N one-thread processes of the same backend run at once); "
                  "x N pipelines = speed / (N one-thread read -> parse -> tokenize -> write processes of the same "
                  "backend run at once); median [min–max] over repeats; cpu eff = the ceiling's CPU seconds for this "
                  "text / CPU seconds of the whole process tree; peak RSS (summed over the process tree, shared "
                  "pages counted in each process) and PSS (shared pages split)"]
        ceilings = result["ceilings"].get(chosen[0]["corpus"], {})
        lines.append("one-thread ceilings: " + "; ".join(
            f"{b} {c['mb_s']:.2f} MB/s wall, {c['cpu_mb_s']:.2f} MB/s of CPU time"
            + "".join(f", {k.split('_')[1]} processes at once {x / c['mb_s']:.2f}x one" for k, x in c.items()
                      if k.startswith("processes_"))
            + (f", pipeline {c['pipeline_mb_s']:.2f} MB/s" if c.get("pipeline_mb_s") else "")
            + "".join(f", {k.split('_')[2]} pipelines at once {x / c['pipeline_mb_s']:.2f}x one"
                      for k, x in c.items() if k.startswith("pipeline_processes_") and c.get("pipeline_mb_s"))
            for b, c in ceilings.items() if c.get("mb_s"))
            + "; median load average during runs "
            + f"{statistics.median(v['summary']['loadavg_1m'] or 0 for v in chosen):.1f}")
        header = ["variant", "MB/s", "tokens/s", "docs/s", "x ceiling", "x N at once", "x N pipelines", "cpu eff",
                  "RSS MB", "PSS MB", "tokens"]
        header += [f"vs {p}" for p in peers] if scenario == "main" else []
        rows = []
        for v in chosen:
            s = v["summary"]
            memory = [f"{s[k]:,.0f}" if s[k] is not None else "—" for k in ("peak_rss_mb", "peak_pss_mb")]
            row = [v["name"], _fmt(s["mb_s"]), _fmt(s["tokens_s"], 0, False), _fmt(s["docs_s"], 0, False),
                   _fmt(s["fraction_of_ceiling"], 3), _fmt(s["fraction_of_parallel_ceiling"], 3, False),
                   _fmt(s.get("fraction_of_parallel_pipelines"), 3, False),
                   _fmt(s["cpu_efficiency"], 3, False), *memory,
                   {True: "ok", False: "WRONG", None: "unchecked"}[s["tokens_ok"]]]
            if scenario == "main":
                row += [f"{s['vs_peers'][p]:.2f}x" if p in s["vs_peers"] else "—" for p in peers]
            rows.append(row)
        lines += _table(header, rows)
    for v in result["variants"]:
        m = v["summary"].get("memory_vs_1x")
        if m and m["peak_rss_mb_ratio"] and m["peak_pss_mb_ratio"]:
            lines.append(f"memory, {v['scale']}x the slice against 1x ({m['base']}): peak RSS x"
                         f"{m['peak_rss_mb_ratio']:.3f}, peak PSS x{m['peak_pss_mb_ratio']:.3f}")
    for v in result["variants"]:
        if cost := v["summary"].get("vs_parquet_only"):
            cpu = f", {100 * (cost['cpu_ratio'] - 1):+.1f} % CPU of the process tree" if cost["cpu_ratio"] else ""
            lines.append(f"binary formats: {v['name']} runs at {cost['speed_ratio']:.3f}x the speed of {cost['base']} "
                         f"(cost {100 * (1 - cost['speed_ratio']):.1f} % of throughput{cpu}; target at most 10 %)")
    prep_runs = [v for v in result["variants"] if v["kind"] == "prep" and v["summary"].get("workers")]
    if prep_runs:
        lines += ["", "== where prep's time went (seconds per worker, median over repeats; from the manifest; "
                  "cpu from the process tree)"]
        header = ["variant", "worker", "busy", "parse", "filter", "tokenize", "features", "transport", "other",
                  "idle", "queue wait", "cpu",
                  "CPU ms/MiB in the engine: coordinator, parse, tokenize, features, transport, writer; CPU s besides"]
        rows = []
        for v in prep_runs:
            s = v["summary"]
            cpu = s["cpu_s"]
            label = (f"{v['name']} (engine {_fmt(s['engine_wall_s'], 1, False)} s of {_fmt(s['seconds'], 1, False)}"
                     f" s; cpu: coordinator {cpu.get('coordinator', 0):.1f} s, writer {cpu.get('writer', 0):.1f} s)")
            for j, w in enumerate(s["workers"]):
                wcpu = s["worker_cpu_s"][j] if j < len(s["worker_cpu_s"]) else float("nan")
                rows.append([label if j == 0 else "", str(j)] + [f"{w.get(k, 0.0):.2f}" for k in (
                    "busy_s", *_PARTS, "other_s", "idle_s", "queue_wait_s")]
                    + [f"{wcpu:.2f}", _per_mib(s, result["corpora"][v["corpus"]]["text_bytes"]) if j == 0 else ""])
        lines += _table(header, rows)
    roles = ["coordinator", "main", "writer", "worker", "child", "helper"]
    rows = [[v["name"]] + [f"{v['summary']['peak_rss_by_role_mb'].get(r, 0):,.0f}" for r in roles]
            for v in result["variants"] if v["summary"].get("peak_rss_by_role_mb")]
    if rows:
        lines += ["", "== peak RSS by process role, MB (each process's own peak, summed over processes of the role; "
                  "helper: forkserver and resource tracker)"] + _table(["variant", *roles], rows)
    lines += format_targets(targets(result))
    if result["problems"]:
        lines += ["", "PROBLEMS:"] + [f"  {p}" for p in result["problems"]]
    return "\n".join(lines)


def format_targets(rows: list[dict]) -> list[str]:
    """The targets table (`targets`' rows), with its heading; nothing when no target was measured."""
    if not rows:
        return []
    heading = ("== issue 12's targets (and issue 14's filter budget) measured in this run (median [min–max] over "
               "repeats; met: the median meets the threshold)")
    return ["", heading] + _table(["target", "variant", "measured", "threshold", "met"], [
        [t["target"], t["variant"], _fmt(t["value"], 0 if t["threshold"] >= 100 else 3),  # MB whole, ratios .001
         ("≥ " if t["at_least"] else "≤ ") + f"{t['threshold']:g}",
         "yes" if t["met"] else "NO"] for t in rows])


def svg_bars(title: str, rows: list[tuple[str, list[tuple[float, str, str]], tuple[float, float] | None]],
             unit: str, marks: Sequence[tuple[float, str]] = ()) -> str:
    """A horizontal bar chart: each row a label, stacked (value, colour, name) segments, an optional whisker."""
    label_w, bar_w, row_h, top = 330, 460, 20, 30
    biggest = max([sum(s[0] for s in segs) for _, segs, _ in rows] + [hi for *_, w in rows if w for hi in w[1:]]
                  + [m for m, _ in marks] + [1e-9])
    scale = bar_w / (biggest * 1.08)
    height = top + row_h * len(rows) + 20 + 12 * max(0, len(marks) - 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{height}" '
             f'font-family="sans-serif" font-size="11">', f'<text x="4" y="16" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for k, (label, segments, whisker) in enumerate(rows):
        y = top + k * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>')
        x = label_w
        for value, color, name in segments:
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(0.0, value * scale):.1f}" height="{row_h - 6}" '
                         f'fill="{color}"><title>{html.escape(name)}: {value:.3g} {unit}</title></rect>')
            x += value * scale
        end = x
        if whisker:
            lo, hi = (label_w + w * scale for w in whisker)
            parts.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 10}" y2="{y + 10}" stroke="black"/>')
            end = max(end, hi)
        total = sum(s[0] for s in segments)
        shown = f"{total:,.0f}" if total >= 100 else f"{total:.3g}"
        parts.append(f'<text x="{end + 4:.1f}" y="{y + 13}">{shown}</text>')
    for k, (value, name) in enumerate(marks):  # one text line per mark, so close marks stay readable
        x = label_w + value * scale
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 16 - 12 * k}" stroke="red" '
                     f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{height - 4 - 12 * k}" fill="red" '
                     f'text-anchor="middle">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _color(v: dict) -> str:
    kind = "ceiling" if v["kind"] == "pipeline" else v["kind"]
    return COLORS[kind] if kind in COLORS else COLORS[v["backend"]]


def _stat_rows(variants: list[dict], get: Callable[[dict], dict | None]) -> list:
    """svg_bars rows of one statistic of each variant's summary (median bar, min-max whisker), where it has one."""
    return [(v["name"], [(stat["median"], _color(v), "median")], (stat["min"], stat["max"]))
            for v in variants if (stat := get(v["summary"]))]


def format_html(result: dict) -> str:
    """A self-contained page: the terminal report, then charts (inline SVG, no dependency)."""
    charts = []
    fractions = {  # per scenario: (summary key, title, issue 12's target marks)
        "main": [("fraction_of_parallel_pipelines", "x N pipeline ceilings run at once",
                  [(PIPELINE_TARGET, f"prep[fast] target {PIPELINE_TARGET}"),
                   (NO_FEATURES_PIPELINE_TARGET, f"--features none target {NO_FEATURES_PIPELINE_TARGET}")]),
                 ("fraction_of_parallel_ceiling", "x N one-thread ceilings run at once",
                  [(TOKENIZERS_0_TARGET, f"tokenizers 0.2x target {TOKENIZERS_0_TARGET}"),
                   (TIKTOKEN_TARGET, f"tiktoken target {TIKTOKEN_TARGET}")]),
                 ("fraction_of_ceiling", "fraction of the ceiling (workers x one thread)", [])],
        "tiny": [("fraction_of_ceiling", "fraction of the ceiling (workers x one thread)",
                  [(TINY_TARGET, f"target {TINY_TARGET}")])]}
    for scenario in SCENARIOS:
        chosen = [v for v in result["variants"] if v["scenario"] == scenario and v["summary"]["fraction_of_ceiling"]]
        if not chosen:
            continue
        for key, title, marks in fractions.get(scenario, [fractions["main"][-1]]):
            if rows := _stat_rows(chosen, lambda s, key=key: s.get(key)):
                charts.append(svg_bars(f"{scenario}: {title}", rows, "", marks))
        if scenario == "main" and (rows := _stat_rows(
                [v for v in chosen if v["kind"] == "prep"], lambda s: s["vs_peers_runs"].get(POOL_BATCH_PEER))):
            charts.append(svg_bars(f"main: speed x the {POOL_BATCH_PEER} peer's (Pool + tokenizers)", rows, "",
                                   [(PEER_TARGET, f"prep[fast] target {PEER_TARGET}")]))
        if rows := _stat_rows(chosen, lambda s: s["cpu_efficiency"]):
            charts.append(svg_bars(f"{scenario}: CPU efficiency (tokenizer's own CPU need / CPU of the process tree)",
                                   rows, ""))
        rows = [(v["name"], [(v["summary"]["peak_rss_mb"] or 0.0, _color(v), "peak RSS")], None) for v in chosen]
        charts.append(svg_bars(f"{scenario}: peak RSS of the process tree, MB", rows, "MB",
                               [(MEMORY_TARGET_MB, f"target {MEMORY_TARGET_MB} MB (2 workers)")]))
    rows = []
    for v in result["variants"]:
        for j, w in enumerate(v["summary"].get("workers") or []):
            segs = [(w[f"{k}_s"], SPLIT_COLORS[k], k) for k in ("tokenize", "features", "transport", "other", "idle")]
            rows.append((f"{v['name']} · worker {j}", segs, None))
    if rows:
        charts.append(svg_bars("prep: each worker's time, s (tokenize, features, transport, other, idle)", rows, "s"))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>prep bench</title></head><body>"
            f"<h1>prep bench</h1><p>{html.escape(result['created'])}</p>"
            + "".join(f"<div>{c}</div>" for c in charts)
            + f"<pre>{html.escape(format_report(result))}</pre></body></html>\n")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def bench_command(
    corpus: Annotated[Path | None, typer.Option(help="any input prep reads (default: a slice of ../shared/corpus)")]
    = None,
    mb: Annotated[float, typer.Option(help="MB of text to take, the same fraction of every file (more: all)")] = 50.0,
    tokenizer: Annotated[Path, typer.Option(help="tokenizer.json")] = DEFAULT_TOKENIZER,
    workers: Annotated[int | None, typer.Option(help="N (default: CPUs): prep at 1, 2, 4, .. and N workers")] = None,
    repeats: Annotated[int, typer.Option(help="rounds over all variants, each in a different order")] = 3,
    scenarios: Annotated[str, typer.Option(help="comma-separated: main, tiny, huge, memory, filters, feed")] = "main",
    routers: Annotated[str, typer.Option(help="routers to compare at N workers; the first also runs at 1, 2, 4, "
                                               "..")] = ",".join(BENCH_ROUTERS),
    backends: Annotated[str, typer.Option(help="tokenizer backends, each against its ceiling")] = ",".join(BACKENDS),
    peers: Annotated[str, typer.Option(help="other tools to compare with (empty: none)")] = ",".join(PEERS),
    tiny_docs: Annotated[int, typer.Option(help="documents in the tiny scenario")] = 1_000_000,
    huge_mb: Annotated[float, typer.Option(help="MB of the one document in the huge scenario")] = 100.0,
    memory_factor: Annotated[int, typer.Option(help="the memory scenario's larger corpus, x the slice")] = 4,
    json_out: Annotated[Path, typer.Option(help="where to write the results as JSON")] = Path("out/bench/bench.json"),
    html_out: Annotated[Path | None, typer.Option(help="the report with charts (default: next to --json-out)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="where to build inputs and outputs (default: temp)")] = None,
    keep: Annotated[bool, typer.Option(help="keep the work directory")] = False,
    timeout: Annotated[float, typer.Option(help="seconds before one run is stopped")] = 3600.0,
) -> None:
    """Measure prep against its ceiling (workers x one tokenizer thread) and against today's tools.

    Every run's token count is checked against the ceiling's; a wrong count is reported and
    makes the exit status 1. The main scenario at the defaults takes about 20 minutes on 2 cores;
    `huge` needs about 15 GB of memory for the tokenizers ceiling, which tokenizes the document whole (the
    library's own cost; prep tokenizes it in pieces).
    """
    opts = BenchOptions(corpus=corpus, mb=mb, tokenizer=tokenizer, workers=workers or 0, repeats=repeats,
                        scenarios=_names(scenarios), routers=_names(routers), backends=_names(backends),
                        peers=_names(peers), tiny_docs=tiny_docs, huge_mb=huge_mb, memory_factor=memory_factor,
                        workdir=workdir, keep=keep, timeout=timeout)
    result = run_bench(opts)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    html_path = html_out or json_out.with_suffix(".html")
    html_path.write_text(format_html(result), encoding="utf-8")
    typer.echo(format_report(result))
    typer.echo(f"\nresults  {json_out}\nreport   {html_path}")
    if result["problems"]:
        raise typer.Exit(1)
