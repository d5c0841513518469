"""What prep may delete in an output directory, and where an output may not go.

prep deletes only what it can prove it wrote: files named by its exact patterns, in a directory that
carries its marker (`.prep-output`, created when prep first claims an empty directory), plus what the
directory's own journal lists. It never removes a directory, never follows a link, and refuses an output
that is an input, lies inside an input directory, or holds an input. Both engines use these rules; the
listing of a directory is all they need, so local and remote outputs are judged alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prep.errors import UserError

MARKER = ".prep-output"
MARKER_TEXT = b'{"written_by": "prep", "note": "prep deletes files here only when this marker is present"}\n'
MANIFEST_NAME = "_manifest.json"
# Every name prep writes into an output directory (and the temp name of each: "." + name + ".tmp").
OWNED_NAMES = re.compile(
    r"part-\d{5}-train(\.parquet|_text_document\.bin|_text_document\.idx|\.llmc\.bin)"
    r"|_manifest\.json|_journal\.jsonl|_quarantine\.jsonl(\.partial)?|_filtered\.jsonl\.partial|_filtered\.parquet"
    r"|_dedup\.jsonl|_routing\.parquet|report\.html|\.prep-shm"
)
_TEMP = re.compile(r"\.(?P<name>.+)\.tmp")
_SHARD = re.compile(r"part-(?P<index>\d{5})-train\.[a-z._]+")


@dataclass(frozen=True)
class Entry:
    """One name in an output directory, as a listing gives it (kind: file | dir | link | other)."""

    name: str
    kind: str


def is_owned_name(name: str) -> bool:
    """A name prep itself writes: one of its files, or the temp name of one."""
    temp = _TEMP.fullmatch(name)
    return bool(OWNED_NAMES.fullmatch(temp["name"] if temp else name)) or name == ".prep-write-test.tmp"


def shard_index(name: str) -> int | None:
    """The shard number in a shard file's name (any output format), else None."""
    m = _SHARD.fullmatch(name)
    return int(m["index"]) if m else None


def claim(entries: Iterable[Entry], where: str, flag: str, listed: Iterable[str] = ()) -> list[str]:
    """The names an --overwrite / --resume may delete, after checking that every entry is prep's own.

    `listed` are the names the directory's journal or manifest record as written by prep. Raises a
    UserError naming the first entry that prep cannot prove it wrote.
    """
    entries = sorted(entries, key=lambda e: e.name)
    names = {e.name for e in entries}
    listed = set(listed)
    if entries and MARKER not in names and not listed:
        raise UserError(f"{flag}: {where} holds files prep did not write (no {MARKER} marker; first: "
                        f"{entries[0].name}); choose another output directory")
    for e in entries:
        if e.name == MARKER and e.kind == "file":
            continue
        if e.kind != "file":
            kind = {"dir": "a directory", "link": "a symbolic link"}.get(e.kind, "a special file")
            raise UserError(f"{flag}: {where} holds {e.name}, {kind} prep did not write; "
                            "choose another output directory or move it away")
        if e.name not in listed and not (MARKER in names and is_owned_name(e.name)):
            raise UserError(f"{flag}: {where} holds {e.name}, a file prep did not write; "
                            "choose another output directory or move it away")
    return [e.name for e in entries if e.name != MARKER]


def deletion_order(names: Iterable[str]) -> list[str]:
    """The manifest first: a half-emptied directory must not look finished."""
    return sorted(names, key=lambda n: (n != MANIFEST_NAME, n))


def list_local(out: Path) -> list[Entry]:
    """The directory's entries, links never followed."""
    entries = []
    with os.scandir(out) as it:
        for d in it:
            if d.is_symlink():
                kind = "link"
            elif d.is_dir(follow_symlinks=False):
                kind = "dir"
            elif d.is_file(follow_symlinks=False):
                kind = "file"
            else:
                kind = "other"
            entries.append(Entry(d.name, kind))
    return entries


def delete_local(out: Path, names: Iterable[str]) -> None:
    """Unlink each name (a link itself, never its target); no directory is ever removed."""
    for name in deletion_order(names):
        path = out / name
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)


def write_marker_local(out: Path) -> None:
    marker = out / MARKER
    if not marker.exists():
        marker.write_bytes(MARKER_TEXT)


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def check_no_overlap(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """Refuse an output that is an input, lies inside an input directory, or holds an input."""
    out_real = _real(out)
    for arg in inputs:
        text = os.fspath(arg)
        if "://" in text:
            if "://" in os.fspath(out) and _inside(text.rstrip("/"), os.fspath(out).rstrip("/")):
                raise UserError(f"the output {out} overlaps the input {text}; choose another output directory")
            continue
        base = text
        if any(c in text for c in "*?["):  # a glob: judge by the directory it starts from
            base = os.path.dirname(text.split("*")[0].split("?")[0].split("[")[0]) or "."
        in_real = _real(base)
        if out_real == in_real:
            raise UserError(f"the output {out} is the input {text}; choose another output directory")
        if _inside(out_real, in_real) and os.path.isdir(in_real):
            raise UserError(f"the output {out} lies inside the input directory {text}; "
                            "choose an output outside it")
        if _inside(in_real, out_real):
            raise UserError(f"the input {text} lies inside the output directory {out}; "
                            "choose an output that holds no input")


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip("/") + "/")
