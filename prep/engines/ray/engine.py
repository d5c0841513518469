"""The Ray engine: the same pipeline (sources, routers, stage, writer) on a Ray cluster.

The driver plans and routes; it never holds the corpus. Reader tasks (streaming generators) read one split
each on the cluster and put every chunk in the object store; the driver gets only each chunk's small facts
(rows, text bytes, bad records) and numbers chunks in file order, so `seq` is gapless and the same as the
local engine's. Worker actors each hold a Stage; the project's router picks the actor from the outstanding
work per actor, and a result stays in the object store until the writer actor that owns its shard
(shard k -> writer k mod W) fetches it. Shard boundaries follow the chunks' text bytes exactly as in
`ShardWriter`, so the driver knows each chunk's shard when it admits it; a writer writes a whole shard with
`ShardWriter` into a node-local staging directory and publishes it atomically into any pyarrow filesystem.
The driver appends each committed shard to the journal, in shard order, and writes the manifest last.

Faults: a worker actor that dies is restarted by Ray (`max_restarts`) or replaced by us; its queued tasks
are routed again and the one it was running is charged an attempt (retry, bisect, quarantine, as in the
local engine). A lost input chunk is rebuilt by Ray's lineage (the reader runs again); a lost result is
computed again; a writer that dies is sent its shard again (publishing is idempotent).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import posixpath
import queue
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from prep.config import PipelineConfig
from prep.core.accounting import EngineResult, routing_summary
from prep.core.chunk import Chunk, Origins, sample_texts
from prep.core.dedup import INDEX_FILE, Deduper, dedup_settings
from prep.core.retry import quarantine_record, strict_fault_error
from prep.core.router import Router, make_router
from prep.core.stage import selected_features, single_thread_env
from prep.core.taskbook import Outcome, TaskBook
from prep.errors import RunFailed, UserError, interruptible
from prep.io.output import (
    check_resumable,
    journal_listed,
    make_output_dir,
    open_output,
    output_fingerprint,
    output_lock,
    remove_uncommitted,
)
from prep.io.ownership import MARKER, MARKER_TEXT, Entry, check_no_overlap, claim, deletion_order, shard_index
from prep.io.sources import InputFile, expand_inputs, input_kind, is_hidden, iter_chunks, total_input_bytes
from prep.io.trainer_formats import OutputSpec, output_spec
from prep.io.verify import batch_digest, check_committed_chunk, committed_digests, entry_files, first_bad_entry
from prep.io.writer import (
    FILTERED,
    FILTERED_PARTIAL,
    JOURNAL,
    MANIFEST,
    QUARANTINE,
    QUARANTINE_PARTIAL,
    ROUTING,
    ShardWriter,
    append_journal,
    append_records,
    fsync_dir,
    read_journal,
    write_atomic,
)
from prep.request import RunRequest
from prep.text.tokenizer import TokenizerInfo, choose_backend, describe_tokenizer, eos_id

RAY_MISSING = "--engine ray needs Ray, an optional extra: pip install 'prep[ray]'"
GENERATOR_BACKPRESSURE = 32  # objects a reader may run ahead of the driver (two per chunk)
WAIT_S = 0.5  # the longest the driver blocks before it checks timeouts
POLL_S = 0.005  # how often it asks a reader for the next chunk while it waits for one


def require_ray() -> Any:
    """The ray module, or a one-line UserError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


# ------------------------------------------------------------------------------------------ filesystems


@dataclass(frozen=True)
class FsPath:
    """A directory or file in a pyarrow filesystem (local, s3://, gs://, hdfs://, a SubTreeFileSystem ...)."""

    fs: pafs.FileSystem
    path: str

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, name: str) -> FsPath:
        return FsPath(self.fs, posixpath.join(self.path, name) if self.path else name)

    def __str__(self) -> str:
        return self.path if self.local else f"{self.fs.type_name}:{self.path}"


def resolve(location: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> FsPath:
    """A plain path is local; a URI (s3://, gs://, hdfs://, file://) names its filesystem."""
    text = os.fspath(location)
    if filesystem is not None:
        return FsPath(filesystem, text.rstrip("/"))
    if "://" not in text:
        return FsPath(pafs.LocalFileSystem(), os.path.abspath(text))
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(f"cannot open {text}: {exc}") from None
    return FsPath(fs, path.rstrip("/"))


def _object_store(fs: pafs.FileSystem) -> bool:
    """Object stores have atomic puts and no cheap rename: write the final name directly."""
    while isinstance(fs, pafs.SubTreeFileSystem):
        fs = fs.base_fs
    return fs.type_name in ("s3", "gcs")


def _tmp_name(path: str) -> str:
    return posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")


def publish_file(local_file: str, dest: FsPath) -> None:
    """Put a finished local file at `dest` so that readers never see it half-written: renamed there when
    local (the local file is gone then), copied otherwise."""
    if dest.local:
        try:
            os.replace(local_file, dest.path)
        except OSError as exc:  # another device: copy beside the target, fsync, rename
            if exc.errno != errno.EXDEV:
                raise
            tmp = _tmp_name(dest.path)
            shutil.copyfile(local_file, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest.path)
        fsync_dir(Path(dest.path).parent)
        return
    target = dest.path if _object_store(dest.fs) else _tmp_name(dest.path)
    pafs.copy_files(local_file, target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest.fs)
    if target != dest.path:
        dest.fs.move(target, dest.path)


# ------------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Split:
    """What one reader task reads: a file, or a run of .txt files (packed together, as the local Source
    does). `fs` is None for local paths, read in place; otherwise the files are copied to the reader's
    node first."""

    files: tuple[InputFile, ...]
    fs: pafs.FileSystem | None = None


def plan_inputs(paths: Sequence[str], filesystem: pafs.FileSystem | None = None) -> tuple[list[InputFile],
                                                                                           list[Split]]:
    """Expand the inputs (local ones exactly as the local engine does) and cut them into splits."""
    if filesystem is None and not any("://" in str(p) for p in paths):
        files = expand_inputs([str(p) for p in paths])
        located = [(f, None) for f in files]
    else:
        located = []
        for arg in paths:
            where = resolve(arg, filesystem)
            located += [(f, None) for f in expand_inputs([where.path])] if where.local else [
                (f, where.fs) for f in _expand_remote(where, str(arg))]
        if len({f.display for f, _ in located}) < len(located):
            located = [(replace(f, display=f.path), fs) for f, fs in located]
    splits = []
    for is_txt, group in itertools.groupby(located, key=lambda item: item[0].format == "txt"):
        group = list(group)
        if is_txt:  # one reader: consecutive text files pack into shared chunks
            for fs, run in itertools.groupby(group, key=lambda item: item[1]):
                splits.append(Split(tuple(f for f, _ in run), fs))
        else:
            splits += [Split((f,), fs) for f, fs in group]
    return [f for f, _ in located], splits


def _expand_remote(where: FsPath, arg: str) -> list[InputFile]:
    """Files under a directory of a non-local filesystem (hidden and `_` names skipped, sorted), or one file.
    Glob patterns and `datasets` directories are local-only."""
    try:
        info = where.fs.get_file_info(where.path)
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"input not found: {arg}")
        if info.type == pafs.FileType.File:
            kind = input_kind(where.path)
            if kind is None:
                raise UserError(f"unsupported input {arg}")
            return [InputFile(where.path, kind[0], kind[1], info.size, posixpath.basename(where.path))]
        infos = where.fs.get_file_info(pafs.FileSelector(where.path, recursive=True))
    except OSError as exc:
        raise UserError(f"cannot list {arg}: {exc}") from None
    files = []
    for i in infos:
        rel = posixpath.relpath(i.path, where.path)
        if i.type != pafs.FileType.File or any(is_hidden(part) for part in rel.split("/")):
            continue
        if i.base_name in ("state.json", "dataset_dict.json"):
            raise UserError(f"{arg}: datasets save_to_disk directories can be read from local paths only")
        if (kind := input_kind(i.base_name)) is not None:
            files.append(InputFile(i.path, kind[0], kind[1], i.size, rel))
    if not files:
        raise UserError(f"no input files in {arg}")
    return sorted(files, key=lambda f: f.display)


def read_split(split: Split, options: dict) -> Iterator:
    """Reader task: two objects per chunk, the batch then its facts; numbers are assigned by the driver."""
    with contextlib.ExitStack() as stack:
        files = list(split.files)
        if split.fs is not None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="prep-read-"))
            for i, f in enumerate(files):
                local = os.path.join(tmp, f"{i}-{posixpath.basename(f.path)}")
                pafs.copy_files(f.path, local, source_filesystem=split.fs,
                                destination_filesystem=pafs.LocalFileSystem())
                files[i] = replace(f, path=local)
        for chunk in iter_chunks(files, **options):
            yield chunk.batch
            yield {"rows": chunk.batch.num_rows, "text_bytes": chunk.text_bytes,
                   "digest": batch_digest(chunk.batch, chunk.quarantine),
                   "documents_in": chunk.documents_in, "quarantine": chunk.quarantine,
                   "input_bytes": chunk.input_bytes, "source": chunk.source, "origins": chunk.origins}


# ------------------------------------------------------------------------------------------------ actors


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class FileActor:
    """Serves the tokenizer file, from the driver's node, to worker actors (restarted ones included): other
    nodes need not share the driver's files. It reads the file itself, so that no restartable actor has
    arguments in the object store (Ray warns about those, since they may be gone when it restarts)."""

    def __init__(self, path: str) -> None:
        self.data = Path(path).read_bytes()

    def get(self) -> bytes:
        return self.data


class StageActor:
    """A worker: one Stage (one tokenizer thread) turning input batches into output batches."""

    def __init__(self, config: dict, backend: str, files: str, slow: float = 1.0) -> None:
        import ray

        single_thread_env()
        from prep.core.stage import Stage

        with tempfile.TemporaryDirectory(prefix="prep-stage-") as tmp:
            path = os.path.join(tmp, os.path.basename(config["tokenizer"]))
            Path(path).write_bytes(ray.get(ray.get_actor(files).get.remote()))
            self.stage = Stage(PipelineConfig(**(config | {"tokenizer": path})), backend)
        self.slow = slow

    def ready(self) -> str:
        return _node()

    def process(self, batch: pa.RecordBatch, start: int, stop: int) -> tuple[tuple[dict, dict], pa.RecordBatch]:
        started = time.perf_counter()
        if start or stop < len(batch):
            batch = batch.slice(start, stop - start)
        output, stats = self.stage(batch)
        finished = time.perf_counter()
        if self.slow > 1.0:  # a straggler on purpose, for routing experiments
            time.sleep((finished - started) * (self.slow - 1.0))
            finished = time.perf_counter()
        timing = {"busy_s": finished - started, "tokenize_s": stats.tokenize_s,
                  "features_s": stats.features_s, "transport_s": 0.0}
        stats_dict = asdict(stats)
        if self.stage.dedup:  # the driver decides duplicates in seq order: it needs the ids beside the keys
            stats_dict["dedup_ids"] = output.column("id").to_pylist()
        return (stats_dict, timing), output


class WriterActor:
    """Writes whole shards it owns: fetch the results, `ShardWriter` into staging, publish atomically."""

    def __init__(self, out: FsPath, shard_bytes: int, compression: str, formats: OutputSpec) -> None:
        self.out, self.shard_bytes, self.compression, self.formats = out, shard_bytes, compression, formats

    def ready(self) -> str:
        return _node()

    def write_shard(self, index: int, first_seq: int, chunks: list) -> dict:
        """index: the number in the shard file's name; chunks: [(seq, info, [(start, stop, [result ref] | None,
        stats)])] in seq order. Returns
        {"entry": journal entry, "quarantine": its bad records as JSON lines}, or {"lost": [(seq, start)]}:
        results that no node holds any more."""
        import ray

        staging = tempfile.mkdtemp(prefix=f"prep-shard-{index}-")
        try:
            writer = ShardWriter(Path(staging), self.shard_bytes, self.compression, first_seq, [],
                                 formats=self.formats)
            writer.shard_index = index  # the run's gapless file numbering: the file gets its final name
            lost = []
            for seq, info, parts in chunks:
                if not lost:
                    writer.add_chunk(seq, info)
                for start, stop, ref, stats in parts:
                    table = None
                    if ref is not None:
                        try:
                            table = pa.Table.from_batches([ray.get(ref[0])])
                        except ray.exceptions.ObjectLostError:
                            lost.append((seq, start))
                    if not lost:
                        writer.add_part(seq, start, stop, table, stats)
            if lost:
                return {"lost": lost}
            if writer.current["last_seq"] is not None:
                writer.commit()
            if len(writer.entries) != 1:
                raise RuntimeError(f"shard {index}: boundaries differ from the driver's plan")
            entry = writer.entries[0]
            for f in entry["files"]:
                publish_file(os.path.join(staging, f["file"]), self.out.child(f["file"]))
            partial, filtered = Path(staging, QUARANTINE_PARTIAL), Path(staging, FILTERED_PARTIAL)
            return {"entry": entry, "quarantine": partial.read_bytes() if partial.exists() else b"",
                    "filtered": filtered.read_bytes() if filtered.exists() else b""}
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _for_writer(stats: dict, decision: dict | None) -> dict:
    """A part's stats as its writer needs them: the driver's dedup decision instead of the keys and ids."""
    stats = {k: v for k, v in stats.items() if k not in ("dedup_keys", "dedup_bands", "dedup_sigs", "dedup_ids")}
    if decision is not None:
        stats["dedup"] = decision
    return stats


# ------------------------------------------------------------------------------------------------ output


class Output:
    """The output directory. Its journal and quarantine live in `self.dir`: the output directory itself when
    it is local (with the local engine's checks, lock and fsyncs, by its own functions), else a driver-side
    copy that is uploaded after every change, so that `--resume` and the files are the same either way."""

    def __init__(self, where: FsPath) -> None:
        self.where = where
        self.dir = Path(where.path) if where.local else Path(tempfile.mkdtemp(prefix="prep-output-"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One run at a time per local output directory (object stores have no locks)."""
        if not self.where.local:
            try:
                yield
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)
            return
        make_output_dir(self.dir)
        with output_lock(self.dir):
            yield

    def _remote(self, name: str) -> pafs.FileInfo:
        return self.where.fs.get_file_info(self.where.child(name).path)

    def _upload(self, *names: str) -> None:
        """Copy files of the mirror to the output; one the mirror lacks is deleted there."""
        if self.where.local:
            return
        for name in names:
            if (self.dir / name).exists():
                publish_file(str(self.dir / name), self.where.child(name))
            elif self._remote(name).type != pafs.FileType.NotFound:
                self.where.fs.delete_file(self.where.child(name).path)

    def start(self, fingerprint: dict, overwrite: bool, resume: bool) -> tuple[list[dict], str | None]:
        """Claim the output (fresh, or resumed after its verified committed shards) by the rules of
        `prep.io.ownership`; return the committed journal entries, and a note when one is computed again."""
        try:
            if self.where.local:
                entries, note = open_output(self.dir, fingerprint, overwrite, resume)
            else:
                entries, note = self._start_remote(fingerprint, overwrite, resume)
            lines = [{"fingerprint": fingerprint}, *entries]  # rewritten whole, as the local engine does
            write_atomic(self.dir / JOURNAL, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in lines).encode())
            self._upload(QUARANTINE_PARTIAL, QUARANTINE, FILTERED_PARTIAL, FILTERED, INDEX_FILE, JOURNAL)
        except OSError as exc:
            raise UserError(f"cannot write to output directory {self.where}: {exc}") from None
        return entries, note

    def _start_remote(self, fingerprint: dict, overwrite: bool, resume: bool) -> tuple[list[dict], str | None]:
        fs, path = self.where.fs, self.where.path
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            raise UserError(f"output {self.where} exists and is not a directory")
        listing = [Entry(i.base_name, "dir" if i.type == pafs.FileType.Directory else "file")
                   for i in (fs.get_file_info(pafs.FileSelector(path)) if info.type == pafs.FileType.Directory
                             else [])]
        if any(e.name != MARKER for e in listing) and not (overwrite or resume):
            raise UserError(f"output directory {self.where} already holds data; pass --overwrite to replace it "
                            "or --resume to continue an interrupted run")
        for name in (JOURNAL, QUARANTINE_PARTIAL, QUARANTINE, FILTERED_PARTIAL, INDEX_FILE, MANIFEST):  # --resume reads
            if resume and any(e.name == name and e.kind == "file" for e in listing):
                pafs.copy_files(self.where.child(name).path, str(self.dir / name), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
        header, entries = read_journal(self.dir)
        flag = "--resume" if resume else "--overwrite"
        names = claim(listing, str(self.where), flag, journal_listed(self.dir, header, entries)) if listing else []
        note = None
        if resume and header is not None:
            check_resumable(self.dir, header["fingerprint"], fingerprint)
            bad = first_bad_entry(entries, path, fs)
            if bad is not None:
                index, problem = bad
                note = f"{problem}: computing it again, with the {len(entries) - index - 1} shard(s) after it"
                entries = entries[:index]
            committed = {f["file"] for e in entries for f in entry_files(e)}
            stale = [n for n in names if (shard_index(n) is not None and n not in committed)
                     or (n.startswith(".") and n.endswith(".tmp"))]
            remove_uncommitted(self.dir, entries, [])
        else:
            entries, stale = [], names
            for leftover in self.dir.iterdir():  # what --resume fetched: a fresh start keeps none
                leftover.unlink()
        for name in deletion_order(stale):
            fs.delete_file(self.where.child(name).path)
        fs.create_dir(path, recursive=True)
        if not any(e.name == MARKER for e in listing):
            with fs.open_output_stream(self.where.child(MARKER).path) as f:
                f.write(MARKER_TEXT)
        return entries, note

    def append(self, entry: dict, quarantine: bytes, committed_bytes: int, filtered: bytes = b"",
               filtered_bytes: int = 0, dedup_records: list[dict] | None = None, dedup_bytes: int = 0) -> None:
        """A committed shard: its bad records after those of the shards before it, then its journal line
        (which records how long the quarantine is, as `ShardWriter.commit` does); the same for the records
        of its filtered documents (--keep-filtered)."""
        if filtered:
            with open(self.dir / FILTERED_PARTIAL, "ab") as f:
                f.truncate(filtered_bytes)
                f.write(filtered)
                f.flush()
                os.fsync(f.fileno())
                filtered_bytes = f.tell()
        entry["filtered_bytes"] = filtered_bytes
        if quarantine:
            with open(self.dir / QUARANTINE_PARTIAL, "ab") as f:
                f.truncate(committed_bytes)
                f.write(quarantine)
                f.flush()
                os.fsync(f.fileno())
                committed_bytes = f.tell()
        entry["quarantine_bytes"] = committed_bytes
        if dedup_records is not None:  # the dedup index records of the shard, as ShardWriter.commit appends them
            entry["dedup_bytes"] = append_records(self.dir / INDEX_FILE, dedup_bytes, dedup_records)
        append_journal(self.dir, entry)
        self._upload(*((QUARANTINE_PARTIAL,) if quarantine else ()), *((FILTERED_PARTIAL,) if filtered else ()),
                     *((INDEX_FILE,) if dedup_records else ()), JOURNAL)

    def finish(self, config: PipelineConfig, entries: list[dict], extra: dict, routing_rows: dict,
               deduper: Deduper | None = None) -> dict:
        """Quarantine, routing table and, last, the manifest, by `ShardWriter.finish` itself."""
        writer = ShardWriter(self.dir, config.shard_bytes, config.compression, 0, entries)
        writer.deduper = deduper  # the driver's: the manifest's dedup section
        manifest = writer.finish(extra, routing_rows)
        self._upload(QUARANTINE, QUARANTINE_PARTIAL, FILTERED, FILTERED_PARTIAL, INDEX_FILE, ROUTING, MANIFEST)
        return manifest


# ------------------------------------------------------------------------------------------------ driver


@dataclass(eq=False)
class _Actor:
    index: int
    handle: Any
    ping: Any = None  # ref of the pending ready() call while (re)starting
    ping_at: float | None = None  # when to ask again (it was unreachable: Ray may not know yet it died)
    alive: bool = True  # calls wait in the actor's queue while it starts, as tasks wait in a worker's pipe
    started: bool = False  # has ever been ready
    started_at: float = 0.0


@dataclass
class _ChunkState:
    seq: int
    shard: int
    info: dict
    source: str
    input_bytes: int
    batch: Any
    origins: Origins  # each row's file and position, for a poison document's quarantine record
    parts: dict = field(default_factory=dict)  # start -> (stop, output ref | None, stats)
    reported: bool = False  # progress counted (a result computed again is not counted twice)


@dataclass
class _Shard:
    index: int
    first_seq: int
    text_bytes: int = 0
    last_seq: int | None = None  # set once the shard takes no more chunks
    seqs: list = field(default_factory=list)
    open_chunks: int = 0
    writing: Any = None  # ref of the write_shard call in flight
    attempts: int = 0
    file_index: int | None = None  # its file's number, gapless: given once the shards before it have theirs


class _Feed:
    """Chunks in seq order from reader tasks that run ahead on the cluster."""

    def __init__(self, reader: Any, splits: list[Split], options: dict, ahead: int) -> None:
        self.reader, self.options, self.ahead = reader, options, ahead
        self.waiting = deque(splits)
        self.running: deque = deque()
        self.seq = 0
        self.held: tuple | None = None
        self._top_up()

    def _top_up(self) -> None:
        while self.waiting and len(self.running) < self.ahead:
            self.running.append(self.reader.remote(self.waiting.popleft(), self.options))

    @property
    def done(self) -> bool:
        return self.held is None and not self.running

    def waitable(self) -> Any:
        return self.running[0] if self.held is None and self.running else None

    def next(self, timeout: float | None = 0.0) -> tuple[int, Any, dict] | None:
        """(seq, batch ref, facts) of the next chunk, or None when it is not ready (or the input ended)."""
        import ray

        if self.held is not None:
            item, self.held = self.held, None
            return item
        while self.running:
            gen = self.running[0]
            if not self.ready(gen) and not (timeout != 0 and ray.wait([gen], timeout=timeout, fetch_local=False)[0]):
                return None
            try:
                batch = next(gen)
            except StopIteration:
                self.running.popleft()
                self._top_up()
                continue
            try:
                facts = next(gen)
            except StopIteration:
                ray.get(batch)  # the reader failed: its error is in this ref
                raise RuntimeError("a reader ended mid-chunk") from None
            meta = _get_reader(facts)
            self.seq += 1
            return self.seq - 1, batch, meta
        return None

    @staticmethod
    def ready(gen: Any) -> bool:
        """next(gen) returns at once (a chunk, an error, or the end); cheaper than ray.wait."""
        return gen.next_ready() or gen.is_finished()

    def peek(self) -> tuple[int, Any, dict] | None:
        """The first chunk (blocking), kept for the next `next()`."""
        self.held = self.next(timeout=None)
        return self.held

    def cancel(self) -> None:
        import ray

        for gen in self.running:
            with contextlib.suppress(Exception):  # best effort on the way out
                ray.cancel(gen, force=True)
        self.running.clear()


def _get_reader(ref: Any) -> Any:
    """ray.get for reader results: a user error in a reader (missing field, strict mode) stays one line."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise UserError(str(exc.cause)) from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


class RayEngine:
    """Run one pipeline over planned splits with M worker actors and W writer actors."""

    def __init__(
        self,
        config: PipelineConfig,
        tokenizer: TokenizerInfo,
        router: Router,
        output: Output,
        feed: _Feed,
        *,
        start_seq: int = 0,
        journal_entries: list[dict] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        slow_workers: dict[int, float] | None = None,
        manifest_base: dict | None = None,
        writers: int | None = None,
    ) -> None:
        self.config, self.tokenizer, self.router, self.output, self.feed = config, tokenizer, router, output, feed
        self.workers_n = router.workers
        self.writers_n = writers or max(2, math.ceil(self.workers_n / 16))
        self.window = max(4, 4 * self.workers_n)
        self.max_open_shards = 2 * self.writers_n
        self.start_seq = start_seq
        self.entries = list(journal_entries or [])
        self.journalled = committed_digests(self.entries)
        self.on_progress = on_progress or (lambda _bytes, _docs: None)
        self.slow_workers = slow_workers or {}
        self.manifest_base = manifest_base or {}
        self.timings: dict[str, float] = {}
        # dedup: decided here, in seq order, from the keys and ids the stage actors return (prep.core.dedup)
        settings = dedup_settings(config)
        self.deduper = Deduper(settings) if settings is not None else None
        if self.deduper is not None:
            self.deduper.load(output.dir / INDEX_FILE, self.entries[-1].get("dedup_bytes", 0) if self.entries else 0)
        self.decisions: dict[int, dict[int, dict]] = {}  # seq -> start -> decision, until the shard is committed
        self.dedup_records: dict[int, list[dict]] = {}  # shard index -> its index records, until journalled

    # ------------------------------------------------------------------------------------------ set-up
    def _new_actor(self, index: int) -> _Actor:
        config = self.config.to_dict()
        cpus = 1 if self.workers_n <= self.cluster_cpus else 0  # oversubscribed: no reservation, all start
        handle = self.stage_cls.options(
            num_cpus=cpus, max_restarts=3, max_task_retries=0, scheduling_strategy="SPREAD",
        ).remote(config, self.tokenizer.backend, self.files_name, self.slow_workers.get(index, 1.0))
        actor = _Actor(index, handle, started_at=time.perf_counter())
        self._ping(actor)
        return actor

    def _new_writer(self, index: int) -> _Actor:
        handle = self.ray.remote(WriterActor).options(
            num_cpus=0, max_restarts=-1, max_task_retries=0, scheduling_strategy="SPREAD",
        ).remote(self.output.where, self.config.shard_bytes, self.config.compression, output_spec(self.config))
        writer = _Actor(index, handle, started_at=time.perf_counter())
        self._ping(writer)
        return writer

    def _ping(self, actor: _Actor) -> None:
        """Ask a (re)starting actor to answer once it is up."""
        actor.ping, actor.ping_at = self._watch(actor.handle.ready.remote()), None
        self.pinging[actor.ping] = actor

    def _watch(self, ref: Any) -> Any:
        """Have `ref` put on the done queue when it completes: O(1) per event, where ray.wait over every ref
        in flight would cost O(refs) each time (~3 ms at 6,400 refs, the window of 1,600 workers)."""
        ref.future().add_done_callback(lambda _future: self.done.put(ref))
        return ref

    def run(self) -> EngineResult:
        import ray

        self.ray = ray
        self.cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.stage_cls = ray.remote(StageActor)
        self.files_name = f"prep-files-{os.getpid()}-{time.time_ns()}"  # by name: a handle argument counts too
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.files = ray.remote(FileActor).options(num_cpus=0, name=self.files_name, max_restarts=-1,
                                                   scheduling_strategy=here).remote(self.config.tokenizer)
        self.actors: list[_Actor] = []
        self.writers: list[_Actor] = []
        try:
            return self._run()
        finally:
            self.feed.cancel()
            for handle in [a.handle for a in self.actors + self.writers] + [self.files]:
                ray.kill(handle)

    def _run(self) -> EngineResult:
        self.t0 = time.perf_counter()
        cpu0 = time.process_time()
        self.done: queue.SimpleQueue = queue.SimpleQueue()  # refs that completed, from Ray's callback thread
        self.pinging: dict = {}  # ready() ref -> actor
        self.writing: dict = {}  # write_shard ref -> shard index
        self.nodes: dict[str, list] = {"workers": [None] * self.workers_n, "writers": [None] * self.writers_n}
        self.book = TaskBook(self.router, chunk_bytes=self.config.chunk_bytes,
                             chunk_timeout_s=self.config.chunk_timeout_s, t0=self.t0)
        self.writers = [self._new_writer(w) for w in range(self.writers_n)]
        self.actors = [self._new_actor(j) for j in range(self.workers_n)]
        self.refs: dict[int, tuple] = {}  # task id -> (result ref, output ref) of a task sent to an actor
        self.by_result: dict = {}  # result ref -> task id
        self.chunks: dict[int, _ChunkState] = {}
        self.shards: dict[int, _Shard] = {}
        self.filling: _Shard | None = None
        self.next_shard = len(self.entries)
        self.next_file = sum(1 for e in self.entries if e.get("files") or e["file"])
        self.committed: dict[int, dict] = {}
        self.computing = 0  # admitted chunks with rows still to compute
        self.writer_deaths = 0
        self.next_check = 0.0
        source_done = False

        while True:
            while not source_done and self._can_admit():
                item = self.feed.next()
                if item is None:
                    source_done = self.feed.done
                    break
                self._admit(*item)
            if source_done and self.filling is not None:
                self.filling.last_seq = self.filling.seqs[-1]
                self.filling = None
            self._dispatch()
            self._seal()
            if source_done and not self.shards:
                break
            self._wait_and_handle(feed=not source_done and self._can_admit())

        self.timings["driver_cpu_s"] = time.process_time() - cpu0
        return self._finish()

    # -------------------------------------------------------------------------------------- the flow
    def _can_admit(self) -> bool:
        """Bounded memory: chunks in computation, and shards held until written."""
        return self.computing < self.window and (self.filling is not None
                                                 or len(self.shards) < self.max_open_shards)

    def _admit(self, seq: int, batch: Any, meta: dict) -> None:
        if seq < self.start_seq:  # committed by an earlier run (--resume): prove it is the same
            check_committed_chunk(self.journalled, seq, meta["source"], meta["digest"])
            self.on_progress(meta["input_bytes"], 0)
            return
        info = {k: meta[k] for k in ("rows", "text_bytes", "documents_in", "quarantine", "source", "digest")}
        shard = self.filling
        if shard is None:
            shard = self.filling = self.shards[self.next_shard] = _Shard(self.next_shard, seq)
            self.next_shard += 1
        shard.seqs.append(seq)
        shard.text_bytes += info["text_bytes"]
        if shard.text_bytes >= self.config.shard_bytes:  # the rule ShardWriter commits by
            shard.last_seq, self.filling = seq, None
        state = _ChunkState(seq, shard.index, info, meta["source"], meta["input_bytes"], batch, meta["origins"])
        self.chunks[seq] = state
        if info["rows"] == 0:  # only bad records: nothing to compute
            state.reported = True
            self.on_progress(state.input_bytes, info["documents_in"])
            return
        shard.open_chunks += 1
        self.computing += 1
        self.book.admit(seq, info["rows"], info["text_bytes"])

    def _dispatch(self) -> None:
        now = time.perf_counter()
        for task in self.book.next_dispatch([a.alive for a in self.actors], now):
            batch = self.chunks[task.seq].batch
            result, output = self.actors[task.worker].handle.process.options(num_returns=2).remote(
                batch, task.start, task.stop)
            self.refs[task.task_id] = (result, output)
            self.by_result[self._watch(result)] = task.task_id

    def _seal(self) -> None:
        """Send every shard whose chunks are all computed to the writer that owns it.

        File numbers are gapless (a shard without rows has no file), so a shard is numbered only once every
        shard before it is: then its row count, and so whether it has a file, is known."""
        for shard in sorted(self.shards.values(), key=lambda s: s.index):
            if shard.file_index is None:
                if shard.last_seq is None or shard.open_chunks:
                    break
                rows = sum(stats["documents"] for seq in shard.seqs for _, _, stats in self.chunks[seq].parts.values())
                rows -= self._dedup(shard)
                shard.file_index = self.next_file
                self.next_file += 1 if rows else 0
            writer = self.writers[shard.index % self.writers_n]
            if shard.open_chunks or shard.writing is not None or not writer.alive:
                continue
            chunks = []
            for seq in shard.seqs:
                state = self.chunks[seq]
                decisions = self.decisions.get(seq, {})
                parts = [(start, stop, None if ref is None else [ref], _for_writer(stats, decisions.get(start)))
                         for start, (stop, ref, stats) in sorted(state.parts.items())]
                chunks.append((seq, state.info, parts))
            shard.writing = self._watch(writer.handle.write_shard.remote(shard.file_index, shard.first_seq, chunks))
            self.writing[shard.writing] = shard.index

    def _dedup(self, shard: _Shard) -> int:
        """Decide the duplicates of a shard whose chunks are all computed, every shard before it decided: so in
        seq order, as the local writer does. The decisions are kept until the shard is committed (a result
        computed again gets the same one); returns the documents removed."""
        if self.deduper is None:
            return 0
        removed = 0
        for seq in shard.seqs:
            for start, (_, _, stats) in sorted(self.chunks[seq].parts.items()):
                if stats["documents"]:
                    decision = self.deduper.decide(stats["dedup_keys"], stats["dedup_ids"], stats["dedup_bands"],
                                                   stats["dedup_sigs"])
                    self.decisions.setdefault(seq, {})[start] = decision
                    removed += len(decision["drop"])
        self.dedup_records[shard.index] = self.deduper.take_records()
        return removed

    def _wait_and_handle(self, feed: bool) -> None:
        """Handle what completed; block until something does (or the next chunk is read, when one may be
        admitted: the reader is then what everyone waits for, and it is polled)."""
        timeout = self._check_timeouts()
        gen = self.feed.waitable() if feed else None
        if gen is not None:
            timeout = 0.0 if self.feed.ready(gen) else POLL_S
        try:
            ref = self.done.get(timeout=timeout) if timeout else self.done.get_nowait()
        except queue.Empty:
            return
        while True:
            if ref in self.pinging:
                self._on_ping(self.pinging.pop(ref), ref)
            elif ref in self.by_result:
                self._on_result(self.by_result[ref], ref)
            elif ref in self.writing:
                self._on_written(self.shards[self.writing.pop(ref)], ref)
            # anything else was superseded (its task routed again)
            try:
                ref = self.done.get_nowait()
            except queue.Empty:
                return

    def _check_timeouts(self) -> float:
        """Kill an actor whose current task ran past the chunk timeout; a run with no live worker fails.
        At most every WAIT_S: it looks at every actor."""
        now = time.perf_counter()
        if now < self.next_check:
            return WAIT_S
        self.next_check = now + WAIT_S
        for j, _reason in self.book.overdue(now):  # a restarted actor is reported lost, then answers its ping
            self.ray.kill(self.actors[j].handle, no_restart=False)
        for a in self.actors + self.writers:
            if a.ping_at is not None and now >= a.ping_at:
                self._ping(a)
        return WAIT_S

    # ------------------------------------------------------------------------------------- results
    def _on_ping(self, actor: _Actor, ref: Any) -> None:
        """A (re)started actor answered, or it is unreachable for now (ask again), or gone (replace it)."""
        ray = self.ray
        pool, new = (self.actors, self._new_actor) if actor in self.actors else (self.writers, self._new_writer)
        if pool[actor.index] is not actor or actor.ping is not ref:
            return  # replaced, or asked again since
        actor.ping = None
        try:
            node = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            actor.ping_at = time.perf_counter() + 1.0
            return
        except ray.exceptions.RayActorError as exc:
            if pool is self.actors:  # its queue goes elsewhere; dying at start again and again ends the run
                self._carry_out(self.book.on_worker_lost(actor.index, _first_line(exc), time.perf_counter()))
            ray.kill(actor.handle)
            pool[actor.index] = new(actor.index)
            return
        actor.alive = actor.started = True
        self.nodes["workers" if pool is self.actors else "writers"][actor.index] = node
        if pool is self.actors:
            self.book.on_ready(actor.index, time.perf_counter())
            self.timings.setdefault("first_worker_ready_s", time.perf_counter() - self.t0)
            if all(a.started for a in self.actors):
                self.timings.setdefault("all_workers_ready_s", time.perf_counter() - self.t0)

    def _on_result(self, task_id: int, ref: Any) -> None:
        ray = self.ray
        task = self.book.tasks[task_id]
        actor = self.actors[task.worker]
        try:
            stats, timing = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._on_actor_death(actor, f"worker lost ({type(exc).__name__})")
            return
        except ray.exceptions.ObjectLostError as exc:
            raise RunFailed(f"chunk {task.seq}: its input was lost and could not be read again "
                            f"({_first_line(exc)})") from None
        except ray.exceptions.RayTaskError as exc:
            outcome = self.book.on_failed(task.worker, task_id, "exception: " + _first_line(exc), time.perf_counter())
            if outcome is not None:
                self._carry_out(outcome)
            return
        done = self.book.on_done(task.worker, task_id, stats["documents"], stats["tokens"], timing,
                                 time.perf_counter())
        if done is None:  # stale: routed again meanwhile
            return
        result, output = self.refs.pop(task_id)
        del self.by_result[result]
        self.chunks[task.seq].parts[task.start] = (task.stop, output, stats)
        if done.closed:
            self._chunk_closed(task.seq)

    def _carry_out(self, outcome: Outcome) -> None:
        """Forget the refs of tasks taken off an actor, record the quarantined documents, close chunks."""
        for task in outcome.released:
            result, _ = self.refs.pop(task.task_id, (None, None))
            self.by_result.pop(result, None)
        for seq, row_index, reason in outcome.quarantine:
            state = self.chunks[seq]
            row = self.ray.get(state.batch).slice(row_index, 1).to_pylist()[0]
            if self.config.strict:
                raise strict_fault_error(state.origins, row_index, row["id"], reason)
            record = quarantine_record(state.origins, row_index, row["text"], reason)
            state.parts[row_index] = (row_index + 1, None,
                                      {"documents": 0, "filtered": 0, "tokens": 0, "quarantine": [record]})
        for seq in outcome.closed:
            self._chunk_closed(seq)

    def _chunk_closed(self, seq: int) -> None:
        """Every row of the chunk is computed (or quarantined): its shard may be sealed."""
        state = self.chunks[seq]
        self.computing -= 1
        self.shards[state.shard].open_chunks -= 1
        if not state.reported:
            state.reported = True
            self.on_progress(state.input_bytes, state.info["documents_in"])

    def _on_actor_death(self, actor: _Actor, reason: str) -> None:
        """Its queued tasks go to other actors; the one it was running is charged an attempt."""
        actor.alive = False
        self._carry_out(self.book.on_worker_lost(actor.index, reason, time.perf_counter()))
        self._ping(actor)  # answers once Ray has restarted it

    def _on_written(self, shard: _Shard, ref: Any) -> None:
        ray = self.ray
        shard.writing = None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # sent again once Ray has restarted the writer
            writer = self.writers[shard.index % self.writers_n]
            self.book.faults.append(f"shard {shard.index}: writer {writer.index} lost ({type(exc).__name__}); "
                               "written again")
            if writer.alive:
                writer.alive = False
                self.writer_deaths += 1
                if self.writer_deaths > 20 + 3 * self.next_shard:
                    raise RunFailed(f"writers keep dying ({self.writer_deaths} times)") from None
                self._ping(writer)
            return
        except ray.exceptions.RayTaskError as exc:
            raise RuntimeError(f"the writer failed on shard {shard.index}:\n{exc}") from None
        if "lost" in result:  # results whose node died before the writer fetched them: compute again
            for seq, start in result["lost"]:
                state = self.chunks[seq]
                stop, _, _ = state.parts.pop(start)
                if not self.book.is_open(seq):
                    self.computing += 1
                    shard.open_chunks += 1
                self.book.faults.append(f"chunk {seq} rows {start}-{stop}: result lost with its node; computed again")
                self.book.reopen(seq, start, stop)
            return
        self.committed[shard.index] = result
        for seq in shard.seqs:
            del self.chunks[seq]
            self.decisions.pop(seq, None)
            self.book.forget(seq)
        del self.shards[shard.index]
        while (n := len(self.entries)) in self.committed:  # the journal stays a prefix of the shards
            done = self.committed.pop(n)
            last = self.entries[-1] if self.entries else {}
            self.output.append(done["entry"], done["quarantine"], last.get("quarantine_bytes", 0),
                               done.get("filtered", b""), last.get("filtered_bytes", 0),
                               self.dedup_records.pop(n, None), last.get("dedup_bytes", 0))
            self.entries.append(done["entry"])

    # ------------------------------------------------------------------------------------------ the end
    def _finish(self) -> EngineResult:
        end = time.perf_counter()
        for a in self.actors:
            account = self.book.accounts[a.index]
            account.idle_s = max(0.0, (end - a.started_at) - account.busy_s)
        extra = dict(self.manifest_base)
        extra["routing"] = routing_summary(self.router, self.book.accounts, len(self.book.routing["seq"]))
        extra["timings"] = {"wall_s": round(end - self.t0, 4)}
        engine = dict(extra.get("engine", {}))
        engine.update({"writers": self.writers_n, "readers_ahead": self.feed.ahead,
                       "worker_nodes": self.nodes["workers"], "writer_nodes": self.nodes["writers"]})
        engine.update({k: round(v, 4) for k, v in self.timings.items()})
        extra["engine"] = engine
        manifest = self.output.finish(self.config, self.entries, extra, self.book.routing, self.deduper)
        return EngineResult(manifest, self.book.accounts, self.book.faults)


# ------------------------------------------------------------------------------------------------ entry


def _cluster_address(address: str | None) -> str | None:
    """--ray-address, else RAY_ADDRESS, else None (a local instance); checked at once, since Ray itself
    retries an unreachable address for minutes."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "auto":
        host, _, port = address.split("://")[-1].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    return address


def _start_ray(address: str | None) -> tuple[bool, dict]:
    """Connect to the cluster or start a local instance (not when this process is connected already);
    say whether we did."""
    import logging

    ray = require_ray()
    if ray.is_initialized():
        return False, {"address": "existing connection", "ray_start_s": 0.0}
    t0 = time.perf_counter()
    kwargs: dict = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            import prep

            ray.init(address=address, runtime_env={"py_modules": [os.path.dirname(prep.__file__)]}, **kwargs)
        else:
            ray.init(address="local", include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = "" if os.environ.get("RAY_AUTH_MODE") else (
            " (a cluster with token authentication also needs RAY_AUTH_MODE=token here)")
        raise UserError(f"cannot reach the Ray cluster at {address}: {_first_line(exc)}{hint}") from None
    return True, {"address": address or "local", "ray_start_s": round(time.perf_counter() - t0, 4)}


def run_ray(request: RunRequest, on_start: Callable[[dict], None] | None = None,
            on_progress: Callable[[int, int], None] | None = None, *,
            input_filesystem: pafs.FileSystem | None = None, output_filesystem: pafs.FileSystem | None = None,
            writers: int | None = None) -> EngineResult:
    """`prep run --engine ray`: the checks of `run_pipeline`, then the Ray engine.

    `request`'s inputs and output may be local paths or URIs (s3://, gs://,
    hdfs://), or paths inside `input_filesystem` / `output_filesystem` when those are given.
    """
    require_ray()
    address = _cluster_address(request.ray_address)
    config = request.config
    if not config.tokenizer:
        raise UserError("no tokenizer: pass --tokenizer PATH or a pipeline file that names one")
    files, splits = plan_inputs(request.inputs, input_filesystem)
    info = describe_tokenizer(config.tokenizer)
    selected_features(config)
    if config.append_eos:
        eos_id(config.tokenizer, config.eos_token)
    output_spec(config)
    fingerprint = output_fingerprint(config, files, info.sha256, {f.path: s.fs for s in splits for f in s.files})
    if input_filesystem is None and output_filesystem is None:
        check_no_overlap(request.inputs, request.output)
    output = Output(resolve(request.output, output_filesystem))
    with output.locked():
        entries, resume_note = output.start(fingerprint, request.overwrite, request.resume)
        started_ray, engine_info = _start_ray(address)
        ray = sys.modules["ray"]
        try:
            with interruptible():  # after ray.init, which sets its own SIGTERM handler
                result = _run_engine(request, output, files, splits, entries, info, engine_info, on_start,
                                     on_progress, writers, resume_note)
        finally:
            if started_ray:
                ray.shutdown()
    return result


def _run_engine(request: RunRequest, output: Output, files: list[InputFile], splits: list[Split], entries: list[dict],
                info: TokenizerInfo, engine_info: dict, on_start: Callable[[dict], None] | None,
                on_progress: Callable[[int, int], None] | None, writers: int | None,
                resume_note: str | None = None) -> EngineResult:
    """Readers first (the first chunk decides the backend), then the workers."""
    ray = sys.modules["ray"]
    config = request.config
    start_seq = entries[-1]["last_seq"] + 1 if entries else 0
    workers = config.workers or int(ray.cluster_resources().get("CPU", 1))
    router = make_router(config.router, workers, config.seed)
    options = {"text_field": config.text_field, "id_field": config.id_field,
               "keep_columns": tuple(config.keep_columns), "chunk_bytes": config.chunk_bytes, "strict": config.strict,
               "max_document_bytes": config.max_document_bytes}
    reader = ray.remote(read_split).options(num_cpus=0, scheduling_strategy="SPREAD", max_retries=3,
                                            _generator_backpressure_num_objects=GENERATOR_BACKPRESSURE)
    feed = _Feed(reader, splits, options, ahead=max(2, math.ceil(workers / 8)))
    try:
        first = feed.peek()
        sample = []
        if first is not None and config.backend != "tokenizers":  # one chunk, for the fast-path check
            seq, batch, meta = first
            sample = sample_texts(Chunk(seq, ray.get(batch), meta["source"], meta["text_bytes"],
                                         meta["input_bytes"], meta["documents_in"]))
        info = choose_backend(info, config.backend, sample)
    except BaseException:
        feed.cancel()
        raise
    engine_info["nodes"] = sum(1 for n in ray.nodes() if n.get("Alive"))
    manifest_base = {
        "config": config.to_dict() | {"workers": workers},
        "tokenizer": info.to_dict(),
        "inputs": [{"path": f.display, "format": f.format, "bytes": f.size} for f in files],
        "engine": {"name": "ray", **engine_info},
    }
    if on_start:
        on_start({"workers": workers, "total_bytes": total_input_bytes(files), "files": len(files),
                  "tokenizer": info, "start_seq": start_seq, "resumed_shards": len(entries),
                  "resume_note": resume_note})
    engine = RayEngine(config, info, router, output, feed, start_seq=start_seq, journal_entries=entries,
                       on_progress=on_progress, slow_workers=request.slow_workers, manifest_base=manifest_base,
                       writers=writers)
    return engine.run()
