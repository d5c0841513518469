"""`prep run`: check the request, prepare the output directory, run an engine, verify the counts.

Everything a user can get wrong is checked here, before any process starts, so that
it ends in one clear line (exit 2) rather than in a worker's traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prep.config import PipelineConfig
from prep.engine import EngineResult, Interrupted, LocalEngine
from prep.errors import UserError
from prep.formats import SHARD_FILE_PATTERNS, output_spec, shard_file_index
from prep.router import make_router
from prep.sources import expand_inputs, iter_chunks, total_input_bytes
from prep.stage import selected_features
from prep.tokenizer import choose_backend, describe_tokenizer, eos_id
from prep.writer import JOURNAL, MANIFEST, QUARANTINE, QUARANTINE_PARTIAL, read_journal, write_atomic

SAMPLE_TEXT_BYTES = 256 * 1024  # of the first chunk, for the fast-path verification
OWN_FILES = (*SHARD_FILE_PATTERNS, "_manifest.json", "_journal.jsonl", "_quarantine.jsonl", "_quarantine.jsonl.partial",
             "_routing.parquet", "report.html", ".*.tmp")
_FINGERPRINT_PARTS = (("inputs", "input files"), ("tokenizer_sha256", "tokenizer"), ("config", "pipeline"))


@dataclass
class RunRequest:
    inputs: Sequence[str]
    output: Path
    config: PipelineConfig
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    slow_workers: dict[int, float] | None = None
    engine: str = "local"  # "local" | "ray"; with "ray", inputs and output may be URIs (s3://, gs://, ...)
    ray_address: str | None = None


def make_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """One run at a time per output directory (a second one would delete the first one's shared memory).

    The lock is on the directory itself, so emptying it for --overwrite keeps it; the kernel drops
    it when this process ends, however it ends.
    """
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another prep run is writing to {out}; wait for it to end or stop it") from None
        except OSError:  # a file system without locks: go on unguarded
            pass
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM end the run through Interrupted (exit 130/143, with a word on --resume)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum, _frame):
        raise Interrupted(signum)

    for s in previous:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def prepare_output(out: Path, overwrite: bool, resume: bool) -> None:
    """An empty output directory, or one emptied of an earlier run's files (--overwrite, or --resume with
    nothing committed to resume)."""
    holds_data = any(out.iterdir())
    if holds_data and not (overwrite or resume):
        raise UserError(f"output directory {out} already holds data; pass --overwrite to replace it "
                        "or --resume to continue an interrupted run")
    if holds_data:
        foreign = [p.name for p in out.iterdir() if not any(p.match(pat) for pat in OWN_FILES)]
        if foreign:
            flag = "--resume" if resume else "--overwrite"
            raise UserError(f"{flag}: {out} holds files prep did not write ({', '.join(sorted(foreign)[:3])});"
                            " choose another output directory")
        (out / MANIFEST).unlink(missing_ok=True)  # first: a half-emptied directory must not look finished
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    try:
        probe = out / ".prep-write-test.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None


def output_fingerprint(config: PipelineConfig, files, tokenizer_sha: str) -> dict:
    """What decides the output bytes; a resumed run must match it exactly."""
    return {
        "config": config.output_fingerprint() | {"tokenizer": None},
        "tokenizer_sha256": tokenizer_sha,
        "inputs": [[f.display, f.size] for f in files],
    }


def run_pipeline(request: RunRequest, on_start: Callable[[dict], None] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> EngineResult:
    if request.engine == "ray":
        from prep.ray_engine import run_ray

        return run_ray(request, on_start, on_progress)
    if request.engine != "local":
        raise UserError(f"unknown engine {request.engine!r}; choose local or ray")
    config, out = request.config, request.output
    with interruptible():
        if not config.tokenizer:
            raise UserError("no tokenizer: pass --tokenizer PATH or a pipeline file that names one")
        files = expand_inputs(request.inputs)
        info = describe_tokenizer(config.tokenizer)
        selected_features(config)  # unknown feature names fail here, before any process starts
        if config.append_eos:
            eos_id(config.tokenizer, config.eos_token)
        output_spec(config)  # formats and packing: user errors here, before any process starts
        make_output_dir(out)
        with output_lock(out):
            return _run_locked(request, files, info, on_start, on_progress)


def _run_locked(request: RunRequest, files, info, on_start, on_progress) -> EngineResult:
    config, out = request.config, request.output
    workers = config.workers or os.cpu_count() or 1
    router = make_router(config.router, workers, config.seed)
    fingerprint = output_fingerprint(config, files, info.sha256)

    header, entries = read_journal(out) if request.resume else (None, [])
    if header is not None:
        check_resumable(out, header["fingerprint"], fingerprint)
    else:  # a fresh start (also --resume when nothing was committed)
        entries = []
        prepare_output(out, request.overwrite, request.resume)
    lines = [{"fingerprint": fingerprint}, *entries]  # rewritten whole: no torn line stays in the middle
    try:
        remove_uncommitted(out, entries)
        write_atomic(out / JOURNAL, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in lines).encode())
    except OSError as exc:  # e.g. the disk is full
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    start_seq = entries[-1]["last_seq"] + 1 if entries else 0

    chunks = iter_chunks(files, text_field=config.text_field, id_field=config.id_field,
                         keep_columns=config.keep_columns, chunk_bytes=config.chunk_bytes, strict=config.strict)
    first = next(chunks, None)
    sample = [] if first is None else sample_texts(first)
    info = choose_backend(info, config.backend, sample)
    stream = chunks if first is None else itertools.chain([first], chunks)

    manifest_base = {
        "config": config.to_dict() | {"workers": workers},
        "tokenizer": info.to_dict(),
        "inputs": [{"path": f.display, "format": f.format, "bytes": f.size} for f in files],
    }
    if on_start:
        on_start({"workers": workers, "total_bytes": total_input_bytes(files), "files": len(files),
                  "tokenizer": info, "start_seq": start_seq, "resumed_shards": len(entries)})
    engine = LocalEngine(config, info, router, out, start_seq=start_seq, journal_entries=entries,
                         on_progress=on_progress, slow_workers=request.slow_workers, manifest_base=manifest_base)
    result = engine.run(stream)
    counts = result.manifest["counts"]
    accounted = counts["documents_out"] + counts["quarantined"] + counts["filtered"]
    if counts["documents_in"] != accounted:
        print(json.dumps(counts), file=sys.stderr)
        raise RuntimeError(f"accounting mismatch: documents_in {counts['documents_in']} != out + quarantined + "
                           f"filtered = {accounted}")
    return result


def check_resumable(out: Path, recorded: dict, fingerprint: dict) -> None:
    """A resumed run must write what the interrupted one would have: same input, tokenizer and pipeline."""
    if (out / MANIFEST).exists():
        raise UserError(f"--resume: {out} holds a finished run (it has {MANIFEST}); use --overwrite to redo it")
    differs = [name for key, name in _FINGERPRINT_PARTS if recorded.get(key) != fingerprint[key]]
    if differs:
        old, new = recorded.get("config") or {}, fingerprint["config"]
        settings = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = f" ({', '.join(settings)})" if "pipeline" in differs and settings else ""
        raise UserError(f"--resume: {out} was written with a different {' and '.join(differs)}{detail}; "
                        "rerun with the original ones, or use --overwrite to start again")


def sample_texts(chunk) -> list[str]:
    texts, total = [], 0
    for text in chunk.batch.column("text").to_pylist():
        texts.append(text)
        total += len(text)
        if total >= SAMPLE_TEXT_BYTES:
            break
    return texts


def remove_uncommitted(out: Path, entries: list[dict]) -> None:
    """What the interrupted run wrote past its journal will be written again: shards, temp files and
    quarantined records beyond the committed length."""
    committed = len(entries)
    for path in out.glob("part-*"):
        if (index := shard_file_index(path.name)) is not None and index >= committed:
            path.unlink()
    for path in out.glob(".*.tmp"):
        path.unlink()
    partial, final = out / QUARANTINE_PARTIAL, out / QUARANTINE
    if final.exists() and not partial.exists():  # interrupted between its rename and the manifest
        os.replace(final, partial)
    final.unlink(missing_ok=True)
    keep = entries[-1].get("quarantine_bytes", 0) if entries else 0
    if partial.exists():
        with open(partial, "rb+") as f:
            f.truncate(keep)
