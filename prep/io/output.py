"""The output directory: claimed, locked, resumed or emptied by prep's ownership rules.

Both executors call these before anything is computed: the directory is made and locked, every file in it is
proved prep's own before one is deleted, a resumed run proves its inputs and committed shards (prep.io.verify),
and what an interrupted run wrote past its journal is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from prep.config import PipelineConfig
from prep.core.dedup import INDEX_FILE
from prep.errors import UserError
from prep.io.ownership import MARKER, claim, delete_local, list_local, shard_index, write_marker_local
from prep.io.verify import changed_input, entry_files, first_bad_entry, stamp
from prep.io.writer import (
    FILTERED,
    FILTERED_PARTIAL,
    JOURNAL,
    MANIFEST,
    QUARANTINE,
    QUARANTINE_PARTIAL,
    read_journal,
)

_FINGERPRINT_PARTS = (("tokenizer_sha256", "tokenizer"), ("config", "pipeline"),
                      ("chunking", "version of prep (it cuts input into chunks differently)"),
                      ("features", "version of prep (it computes features differently)"),
                      ("encoding", "version of prep (it encodes shards differently)"))
CHUNKING = 3  # how input is cut into chunks; 2: JSON Lines and CSV by their records' bytes, unparsed; 3: Parquet,
# datasets and .txt by their metadata (row groups, text offsets, file sizes), unread
FEATURES_VERSION = 2  # how prep.text.features computes them; 2: content_hash is XXH3-64 (it was BLAKE2b-64)
ENCODING = 3  # how shards are encoded, the same settings aside (shards of a resumed run must be the bytes the
# interrupted one would write); 2: a row group is written chunk by chunk, and id and content_hash have no Parquet
# dictionary; 3: only strings kept from the input have one


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


def open_output(out: Path, fingerprint: dict, overwrite: bool, resume: bool) -> tuple[list[dict], str | None]:
    """Claim the output directory and return the committed journal entries to continue after (none for a
    fresh start), with a note when a committed shard failed its check and is computed again.

    Only what prep can prove it wrote is deleted (see prep.io.ownership); a resumed run first proves that its
    committed shards are intact and its inputs unchanged (see prep.io.verify).
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
    return {JOURNAL, MANIFEST, QUARANTINE, QUARANTINE_PARTIAL, FILTERED, FILTERED_PARTIAL, INDEX_FILE} | {
        f["file"] for e in entries for f in entry_files(e)}


def output_fingerprint(config: PipelineConfig, files, tokenizer_sha: str, filesystems: dict | None = None) -> dict:
    """What decides the output bytes; a resumed run must match it exactly. `filesystems`: path -> the
    pyarrow filesystem of a remote input."""
    filesystems = filesystems or {}
    return {
        "config": config.output_fingerprint() | {"tokenizer": None},
        "tokenizer_sha256": tokenizer_sha,
        "chunking": CHUNKING,
        "features": FEATURES_VERSION,
        "encoding": ENCODING,
        "inputs": [[f.display, *stamp(f.path, filesystems.get(f.path))] for f in files],
    }


def check_resumable(out: Path, recorded: dict, fingerprint: dict) -> None:
    """A resumed run must write what the interrupted one would have: same input, tokenizer and pipeline."""
    if (out / MANIFEST).exists():
        raise UserError(f"--resume: {out} holds a finished run (it has {MANIFEST}); use --overwrite to redo it")
    changed = changed_input(recorded.get("inputs") or [], fingerprint["inputs"])
    if changed:
        raise UserError(f"--resume: {changed} since {out} was written; rerun with the original input, "
                        "or use --overwrite to start again")
    differs = [name for key, name in _FINGERPRINT_PARTS if recorded.get(key) != fingerprint.get(key)]
    if differs:
        old, new = recorded.get("config") or {}, fingerprint["config"]
        settings = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = f" ({', '.join(settings)})" if "pipeline" in differs and settings else ""
        raise UserError(f"--resume: {out} was written with a different {' and '.join(differs)}{detail}; "
                        "rerun with the original ones, or use --overwrite to start again")


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
    index = out / INDEX_FILE  # the dedup index of the committed shards: what a resumed writer reloads
    if index.exists():
        with open(index, "rb+") as f:
            f.truncate(entries[-1].get("dedup_bytes", 0) if entries else 0)
    keep = entries[-1].get("quarantine_bytes", 0) if entries else 0
    if partial.exists():
        with open(partial, "rb+") as f:
            f.truncate(keep)
