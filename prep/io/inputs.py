"""Inputs: the user's paths expanded into the files to read, in a deterministic order.

Files, directories and glob patterns; a `datasets` save_to_disk directory counts as one input per split.
Only regular files are accepted: a FIFO, a device, a socket or a broken link is refused up front, naming it.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace

from prep.errors import UserError

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt",
           ".parquet": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SUPPORTED = (".jsonl, .json, .ndjson, .csv, .txt (each also as .gz or .zst), .parquet, "
             "or a directory written by datasets' save_to_disk")



@dataclass(frozen=True)
class InputFile:
    """One input: a file, or one split of a `datasets` save_to_disk directory."""

    path: str
    format: str  # "jsonl" | "parquet" | "csv" | "txt" | "hf_dataset"
    compression: str | None  # None | "gzip" | "zstd"
    size: int  # bytes on disk (all data files, for a dataset)
    display: str  # path relative to the argument it came from: used in generated ids and quarantine records


# --------------------------------------------------------------------------------------------- expanding


def expand_inputs(paths: Sequence[str]) -> list[InputFile]:
    """Expand files, directories and glob patterns into the inputs to read, deterministically.

    Arguments keep the order given and what each one expands to is sorted. A file named twice is read once
    (nothing doubled); when two inputs would get the same display name, all use their paths as given instead.
    """
    found: dict[str, InputFile] = {}
    for arg in paths:
        for f in _expand(arg):
            found.setdefault(os.path.realpath(f.path), f)
    files = list(found.values())
    if len({f.display for f in files}) < len(files):
        files = [replace(f, display=os.path.normpath(f.path)) for f in files]
    return files


def total_input_bytes(files: Sequence[InputFile]) -> int:
    """Bytes on disk of all inputs: the progress bar's total, matched by the sum of `Chunk.input_bytes`."""
    return sum(f.size for f in files)


def _expand(arg: str) -> list[InputFile]:
    if os.path.isdir(arg):
        files = _walk(arg, "")
        if not files:
            raise UserError(f"no input files in {arg}; supported: {SUPPORTED}")
        return files
    if os.path.exists(arg):
        kind = input_kind(arg)
        if kind is None:
            raise UserError(f"unsupported input {arg}; supported: {SUPPORTED}")
        return [_input(arg, os.path.basename(arg), kind)]
    if any(c in arg for c in "*?["):
        base = _glob_base(arg)
        files = []
        for match in sorted(glob.glob(arg, recursive=True)):
            rel = os.path.relpath(match, base)
            if os.path.isdir(match):
                files += _walk(match, rel)
            elif (kind := input_kind(match)) is not None:
                files.append(_input(match, rel, kind))
        if files:
            return files
    raise UserError(f"input not found: {arg}")


def _walk(root: str, prefix: str) -> list[InputFile]:
    """Inputs under a directory, sorted; hidden and `_`-prefixed names (our own _manifest.json, ...) are
    skipped, and a dataset directory counts as one input per split."""
    own = _dataset_inputs(root, prefix or os.path.basename(os.path.abspath(root)))
    if own is not None:
        return own
    files: list[InputFile] = []

    def fail(err: OSError) -> None:
        raise UserError(f"cannot read directory {err.filename}: {err.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        rel = os.path.normpath(os.path.join(prefix, os.path.relpath(dirpath, root)))
        for d in sorted(dirnames):
            dirnames.remove(d)
            if is_hidden(d):
                continue
            datasets = _dataset_inputs(os.path.join(dirpath, d), os.path.normpath(os.path.join(rel, d)))
            if datasets is None:
                dirnames.append(d)
            else:
                files += datasets
        for name in filenames:
            if not is_hidden(name) and (kind := input_kind(name)) is not None:
                display = os.path.normpath(os.path.join(rel, name))
                files.append(_input(os.path.join(dirpath, name), display, kind))
    return sorted(files, key=lambda f: f.display)


def is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: display names are relative to it."""
    parts = pattern.split(os.sep)
    fixed = list(itertools.takewhile(lambda p: not any(c in p for c in "*?["), parts[:-1]))
    return os.sep.join(fixed) or ("/" if pattern.startswith(os.sep) else ".")


def input_kind(path: str) -> tuple[str, str | None] | None:
    """(format, compression) from a file name, or None when the name is not a supported format."""
    name = os.path.basename(path).lower()
    compression = None
    for ext, codec in COMPRESSIONS.items():
        if name.endswith(ext):
            name, compression = name[: -len(ext)], codec
    fmt = FORMATS.get(os.path.splitext(name)[1])
    if fmt is None or (fmt == "parquet" and compression):
        return None
    return fmt, compression


def _input(path: str, display: str, kind: tuple[str, str | None]) -> InputFile:
    """A regular file to read. A broken link or a special file (FIFO, device, socket) is refused up front: a FIFO
    would block the run before it reads a byte and cannot be cut into pieces, a device may never end."""
    try:
        st = os.stat(path)
    except OSError as err:
        broken = " (a broken symbolic link)" if os.path.islink(path) else ""
        raise UserError(f"cannot read input {path}: {err.strerror}{broken}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"input {path} is {_special_kind(st.st_mode)}, not a regular file; prep reads regular files "
                        "only (copy the data to a file first)")
    return InputFile(path, kind[0], kind[1], st.st_size, display)


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
    return next((name for check, name in kinds if check(mode)), "a special file")


def _dataset_inputs(path: str, display: str) -> list[InputFile] | None:
    """The splits of a save_to_disk directory (sorted), or None when `path` is not one."""
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        try:
            with open(os.path.join(path, "dataset_dict.json")) as fh:
                splits = sorted(json.load(fh)["splits"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot read {path}/dataset_dict.json: {err}") from None
        return [_dataset(os.path.join(path, s), f"{display}/{s}") for s in splits]
    if os.path.isfile(os.path.join(path, "state.json")):
        return [_dataset(path, display)]
    return None


def _dataset(path: str, display: str) -> InputFile:
    return InputFile(path, "hf_dataset", None, sum(os.path.getsize(p) for p in arrow_files(path)), display)


def arrow_files(path: str) -> list[str]:
    """The data files of one saved dataset, in order, as listed by its state.json."""
    try:
        with open(os.path.join(path, "state.json")) as fh:
            names = [d["filename"] for d in json.load(fh)["_data_files"]]
        files = [os.path.join(path, n) for n in names]
        for p in files:
            os.stat(p)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a readable datasets save_to_disk directory: {err}") from None
    return files
