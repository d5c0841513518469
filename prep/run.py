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
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prep.accounting import EngineResult
from prep.chunk import Chunk
from prep.config import PipelineConfig
from prep.engine import LocalEngine, remove_recorded_leftovers
from prep.errors import Interrupted, UserError
from prep.formats import output_spec
from prep.ownership import MARKER, check_no_overlap, claim, delete_local, list_local, shard_index, write_marker_local
from prep.router import make_router
from prep.sources import expand_inputs, iter_chunks, total_input_bytes
from prep.stage import selected_features
from prep.tokenizer import choose_backend, describe_tokenizer, eos_id
from prep.verify import (
    batch_digest,
    changed_input,
    check_committed_chunk,
    committed_digests,
    entry_files,
    first_bad_entry,
    stamp,
)
from prep.writer import (
    FILTERED,
    FILTERED_PARTIAL,
    JOURNAL,
    MANIFEST,
    QUARANTINE,
    QUARANTINE_PARTIAL,
    read_journal,
    write_atomic,
)

SAMPLE_TEXT_BYTES = 256 * 1024  # of the first chunk, for the fast-path verification
_FINGERPRINT_PARTS = (("tokenizer_sha256", "tokenizer"), ("config", "pipeline"))


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


def open_output(out: Path, fingerprint: dict, overwrite: bool, resume: bool) -> tuple[list[dict], str | None]:
    """Claim the output directory and return the committed journal entries to continue after (none for a
    fresh start), with a note when a committed shard failed its check and is computed again.

    Only what prep can prove it wrote is deleted (see prep.ownership); a resumed run first proves that its
    committed shards are intact and its inputs unchanged (see prep.verify).
    """
    listing = [e for e in list_local(out) if e.name != MARKER]
    header, entries = read_journal(out)
    flag = "--resume" if resume else "--overwrite"
    if listing and not (overwrite or resume):
        raise UserError(f"output directory {out} already holds data; pass --overwrite to replace it "
                        "or --resume to continue an interrupted run")
    names = claim(list_local(out), str(out), flag, journal_listed(out, header, entries)) if listing else []
    note = None
    if resume and header is not None:
        check_resumable(out, header["fingerprint"], fingerprint)
        bad = first_bad_entry(entries, str(out.resolve()))
        if bad is not None:
            index, problem = bad
            note = f"{problem}: computing it again, with the {len(entries) - index - 1} shard(s) after it"
            entries = entries[:index]
        remove_uncommitted(out, entries, names)
    else:  # a fresh start (also --resume when nothing was committed)
        entries = []
        delete_local(out, names)
    write_marker_local(out)
    try:
        probe = out / ".prep-write-test.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    return entries, note


def journal_listed(out: Path, header: dict | None, entries: list[dict]) -> set[str]:
    """Names the directory's own journal proves prep wrote (its shards, itself, the side files)."""
    if header is None or "fingerprint" not in header:
        return set()
    return {JOURNAL, MANIFEST, QUARANTINE, QUARANTINE_PARTIAL, FILTERED, FILTERED_PARTIAL} | {
        f["file"] for e in entries for f in entry_files(e)}


def output_fingerprint(config: PipelineConfig, files, tokenizer_sha: str, filesystems: dict | None = None) -> dict:
    """What decides the output bytes; a resumed run must match it exactly. `filesystems`: path -> the
    pyarrow filesystem of a remote input."""
    filesystems = filesystems or {}
    return {
        "config": config.output_fingerprint() | {"tokenizer": None},
        "tokenizer_sha256": tokenizer_sha,
        "inputs": [[f.display, *stamp(f.path, filesystems.get(f.path))] for f in files],
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
        check_no_overlap(request.inputs, out)
        output_spec(config)  # formats and packing: user errors here, before any process starts
        make_output_dir(out)
        with output_lock(out):
            return _run_locked(request, files, info, on_start, on_progress)


def _run_locked(request: RunRequest, files, info, on_start, on_progress) -> EngineResult:
    config, out = request.config, request.output
    workers = config.workers or os.cpu_count() or 1
    router = make_router(config.router, workers, config.seed)
    fingerprint = output_fingerprint(config, files, info.sha256)

    remove_recorded_leftovers(out)  # a killed run's shared memory, before its record could be cleared away
    try:
        entries, resume_note = open_output(out, fingerprint, request.overwrite, request.resume)
        lines = [{"fingerprint": fingerprint}, *entries]  # rewritten whole: no torn line stays in the middle
        write_atomic(out / JOURNAL, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in lines).encode())
    except OSError as exc:  # e.g. the disk is full
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    start_seq = entries[-1]["last_seq"] + 1 if entries else 0

    chunks = iter_chunks(files, text_field=config.text_field, id_field=config.id_field,
                         keep_columns=config.keep_columns, chunk_bytes=config.chunk_bytes, strict=config.strict,
                         max_document_bytes=config.max_document_bytes)
    first = next(chunks, None)
    sample = [] if first is None else sample_texts(first)
    stream = chunks if first is None else itertools.chain([first], chunks)
    skipped_bytes, stream = skip_committed(stream, entries, start_seq)
    info = choose_backend(info, config.backend, sample)

    manifest_base = {
        "config": config.to_dict() | {"workers": workers},
        "tokenizer": info.to_dict(),
        "inputs": [{"path": f.display, "format": f.format, "bytes": f.size} for f in files],
    }
    if on_start:
        on_start({"workers": workers, "total_bytes": total_input_bytes(files), "files": len(files),
                  "tokenizer": info, "start_seq": start_seq, "resumed_shards": len(entries),
                  "resume_note": resume_note})
    if on_progress and skipped_bytes:
        on_progress(skipped_bytes, 0)
    engine = LocalEngine(config, info, router, out, start_seq=start_seq, journal_entries=entries,
                         on_progress=on_progress, slow_workers=request.slow_workers, manifest_base=manifest_base)
    return engine.run(stream)


def check_resumable(out: Path, recorded: dict, fingerprint: dict) -> None:
    """A resumed run must write what the interrupted one would have: same input, tokenizer and pipeline."""
    if (out / MANIFEST).exists():
        raise UserError(f"--resume: {out} holds a finished run (it has {MANIFEST}); use --overwrite to redo it")
    changed = changed_input(recorded.get("inputs") or [], fingerprint["inputs"])
    if changed:
        raise UserError(f"--resume: {changed} since {out} was written; rerun with the original input, "
                        "or use --overwrite to start again")
    differs = [name for key, name in _FINGERPRINT_PARTS if recorded.get(key) != fingerprint[key]]
    if differs:
        old, new = recorded.get("config") or {}, fingerprint["config"]
        settings = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = f" ({', '.join(settings)})" if "pipeline" in differs and settings else ""
        raise UserError(f"--resume: {out} was written with a different {' and '.join(differs)}{detail}; "
                        "rerun with the original ones, or use --overwrite to start again")


def skip_committed(stream: Iterator[Chunk], entries: list[dict], start_seq: int) -> tuple[int, Iterator[Chunk]]:
    """Read past the committed chunks, proving each is the one journalled, before anything is computed;
    return the input bytes skipped and the rest of the stream."""
    expected, skipped = committed_digests(entries), 0
    for chunk in stream:
        if chunk.seq >= start_seq:
            return skipped, itertools.chain([chunk], stream)
        check_committed_chunk(expected, chunk.seq, chunk.source, batch_digest(chunk.batch, chunk.quarantine))
        skipped += chunk.input_bytes
    return skipped, iter(())


def sample_texts(chunk) -> list[str]:
    texts, total = [], 0
    for text in chunk.batch.column("text").to_pylist():
        texts.append(text)
        total += len(text)
        if total >= SAMPLE_TEXT_BYTES:
            break
    return texts


def remove_uncommitted(out: Path, entries: list[dict], names: list[str]) -> None:
    """What the interrupted run wrote past its journal will be written again: shards, temp files and
    quarantined records beyond the committed length. `names` are the files `claim` proved prep's own."""
    committed = {f["file"] for e in entries for f in entry_files(e)}
    delete_local(out, [n for n in names if (shard_index(n) is not None and n not in committed)
                       or (n.startswith(".") and n.endswith(".tmp"))])
    partial, final = out / QUARANTINE_PARTIAL, out / QUARANTINE
    if final.exists() and not partial.exists():  # interrupted between its rename and the manifest
        os.replace(final, partial)
    final.unlink(missing_ok=True)
    (out / FILTERED).unlink(missing_ok=True)  # made again from the partial file at the end
    filtered = out / FILTERED_PARTIAL
    if filtered.exists():
        with open(filtered, "rb+") as f:
            f.truncate(entries[-1].get("filtered_bytes", 0) if entries else 0)
    keep = entries[-1].get("quarantine_bytes", 0) if entries else 0
    if partial.exists():
        with open(partial, "rb+") as f:
            f.truncate(keep)
