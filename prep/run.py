"""`prep run`: check the request, prepare the output directory, run an engine, verify the counts.

Everything a user can get wrong is checked here, before any process starts, so that
it ends in one clear line (exit 2) rather than in a worker's traceback.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prep.config import PipelineConfig
from prep.engine import EngineResult, LocalEngine
from prep.errors import UserError
from prep.router import make_router
from prep.sources import expand_inputs, iter_chunks, total_input_bytes
from prep.stage import selected_features
from prep.tokenizer import choose_backend, describe_tokenizer, eos_id
from prep.writer import JOURNAL, MANIFEST, read_journal

SAMPLE_TEXT_BYTES = 256 * 1024  # of the first chunk, for the fast-path verification
OWN_FILES = ("part-*.parquet", "_manifest.json", "_journal.jsonl", "_quarantine.jsonl", "_routing.parquet",
             "report.html", ".*.tmp")


@dataclass
class RunRequest:
    inputs: Sequence[str]
    output: Path
    config: PipelineConfig
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    slow_workers: dict[int, float] | None = None


def _prepare_output(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    holds_data = out.is_dir() and any(out.iterdir())
    if holds_data and not (overwrite or resume):
        raise UserError(f"output directory {out} already holds data; pass --overwrite to replace it "
                        "or --resume to continue an interrupted run")
    if holds_data and overwrite and not resume:
        foreign = [p.name for p in out.iterdir() if not any(p.match(pat) for pat in OWN_FILES)]
        if foreign:
            raise UserError(f"--overwrite: {out} holds files prep did not write ({', '.join(sorted(foreign)[:3])});"
                            " choose another output directory")
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".prep-write-test.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None


def _fingerprint(config: PipelineConfig, files, tokenizer_sha: str) -> dict:
    """What decides the output bytes; a resumed run must match it exactly."""
    return {
        "config": config.output_fingerprint() | {"tokenizer": None},
        "tokenizer_sha256": tokenizer_sha,
        "inputs": [[f.display, f.size] for f in files],
    }


def run_pipeline(request: RunRequest, on_start: Callable[[dict], None] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> EngineResult:
    config, out = request.config, request.output
    if not config.tokenizer:
        raise UserError("no tokenizer: pass --tokenizer PATH or a pipeline file that names one")
    files = expand_inputs(request.inputs)
    info = describe_tokenizer(config.tokenizer)
    selected_features(config)  # unknown feature names fail here, before any process starts
    if config.append_eos:
        eos_id(config.tokenizer, config.eos_token)
    workers = config.workers or os.cpu_count() or 1
    router = make_router(config.router, workers, config.seed)
    fingerprint = _fingerprint(config, files, info.sha256)

    start_seq, entries = 0, []
    if request.resume and (out / JOURNAL).exists():
        header, entries = read_journal(out)
        if header is None or header["fingerprint"] != fingerprint:
            raise UserError(f"--resume: {out} was written with a different input, tokenizer or pipeline; "
                            "use --overwrite to start again")
        if (out / MANIFEST).exists():
            raise UserError(f"--resume: {out} holds a finished run (it has {MANIFEST})")
        start_seq = entries[-1]["last_seq"] + 1 if entries else 0
        _remove_uncommitted(out, len(entries))
    else:
        _prepare_output(out, request.overwrite, request.resume)
        (out / JOURNAL).write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")

    chunks = iter_chunks(files, text_field=config.text_field, id_field=config.id_field,
                         keep_columns=config.keep_columns, chunk_bytes=config.chunk_bytes, strict=config.strict)
    first = next(chunks, None)
    sample = [] if first is None else _sample_texts(first)
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


def _sample_texts(chunk) -> list[str]:
    texts, total = [], 0
    for text in chunk.batch.column("text").to_pylist():
        texts.append(text)
        total += len(text)
        if total >= SAMPLE_TEXT_BYTES:
            break
    return texts


def _remove_uncommitted(out: Path, committed: int) -> None:
    """Shards past the journal are leftovers of the interrupted run: they will be written again."""
    for path in out.glob("part-*.parquet"):
        if int(path.stem.split("-")[1]) >= committed:
            path.unlink()
    for path in out.glob(".*.tmp"):
        path.unlink()
