"""Where a Ray run reads and writes: local paths or any pyarrow filesystem (s3://, gs://, hdfs://), and the
reader tasks that cut splits into chunks on the cluster."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from prep.errors import UserError
from prep.io.pieces import PIECE_FORMATS
from prep.io.sources import InputFile, expand_inputs, input_kind, is_hidden, iter_chunks
from prep.io.verify import chunk_digest
from prep.io.writer import (
    fsync_dir,
)

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


@dataclass(frozen=True)
class Split:
    """What one reader task reads: a file, or a run of .txt files (packed together, as the local Source
    does). `fs` is None for local paths, read in place; otherwise JSON Lines and CSV files are copied to the
    reader's node first, and Parquet and .txt files are read in place through `fs` (the reader reads a Parquet
    footer, the stage actors the rows)."""

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
        if split.fs is not None and files[0].format in PIECE_FORMATS:
            options = options | {"filesystem": split.fs}
        elif split.fs is not None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="prep-read-"))
            for i, f in enumerate(files):
                local = os.path.join(tmp, f"{i}-{posixpath.basename(f.path)}")
                pafs.copy_files(f.path, local, source_filesystem=split.fs,
                                destination_filesystem=pafs.LocalFileSystem())
                files[i] = replace(f, path=local)
        for chunk in iter_chunks(files, **options):
            yield chunk.batch
            yield {"rows": chunk.units, "weight": chunk.text_bytes, "text_bytes": 0 if chunk.raw else chunk.text_bytes,
                   "raw": chunk.raw,
                   "digest": chunk_digest(chunk),
                   "documents_in": chunk.documents_in, "quarantine": chunk.quarantine,
                   "input_bytes": chunk.input_bytes, "source": chunk.source, "origins": chunk.origins}
