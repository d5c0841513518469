"""A Ray run's output directory, local or remote, claimed and resumed by the same rules as the local engine's."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from prep.config import PipelineConfig
from prep.core.dedup import INDEX_FILE, Deduper
from prep.engines.ray.files import FsPath, publish_file
from prep.errors import UserError
from prep.io.output import (
    check_resumable,
    journal_listed,
    make_output_dir,
    open_output,
    output_lock,
    remove_uncommitted,
)
from prep.io.ownership import MARKER, MARKER_TEXT, Entry, claim, deletion_order, shard_index
from prep.io.verify import entry_files, first_bad_entry
from prep.io.writer import (
    FILTERED,
    FILTERED_PARTIAL,
    JOURNAL,
    MANIFEST,
    QUARANTINE,
    QUARANTINE_PARTIAL,
    ROUTING,
    ShardWriter,
    append_bytes,
    append_journal,
    append_records,
    read_journal,
    write_atomic,
)


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
        entry["filtered_bytes"] = append_bytes(self.dir / FILTERED_PARTIAL, filtered_bytes, filtered)
        entry["quarantine_bytes"] = append_bytes(self.dir / QUARANTINE_PARTIAL, committed_bytes, quarantine)
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
