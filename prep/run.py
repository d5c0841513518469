"""`prep run`: check the request, prepare the output directory, run an engine, verify the counts.

Everything a user can get wrong is checked here, before any process starts, so that
it ends in one clear line (exit 2) rather than in a worker's traceback.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator

from prep.core.accounting import EngineResult
from prep.core.chunk import Chunk, sample_texts
from prep.core.router import make_router
from prep.core.stage import selected_features
from prep.engines.local.coordinator import LocalEngine, remove_recorded_leftovers
from prep.engines.local.forkserver import start_forkserver
from prep.errors import UserError, interruptible
from prep.io.output import make_output_dir, open_output, output_fingerprint, output_lock
from prep.io.ownership import check_no_overlap
from prep.io.pieces import parse_chunk
from prep.io.records import ReadOptions
from prep.io.sources import expand_inputs, iter_chunks, total_input_bytes
from prep.io.trainer_formats import output_spec
from prep.io.verify import skip_committed
from prep.io.writer import JOURNAL, write_atomic
from prep.request import Plan, RunRequest
from prep.text.tokenizer import choose_backend, describe_tokenizer, eos_id, wants_sample


def run_pipeline(request: RunRequest, on_start: Callable[[dict], None] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> EngineResult:
    if request.engine == "ray":
        from prep.engines.ray.run import run_ray

        return run_ray(request, on_start, on_progress)
    if request.engine != "local":
        raise UserError(f"unknown engine {request.engine!r}; choose local or ray")
    config, out = request.config, request.output
    with interruptible():
        start_forkserver(config.compiled_code())  # its imports run while the request is checked
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

    def cut() -> Iterator[Chunk]:
        return iter_chunks(files, text_field=config.text_field, id_field=config.id_field,
                           keep_columns=config.keep_columns, chunk_bytes=config.chunk_bytes, strict=config.strict,
                           max_document_bytes=config.max_document_bytes, raw=True)

    chunks = cut()
    first = next(chunks, None)
    wanted = first is not None and wants_sample(config.backend)
    sample = sample_texts(parse_chunk(first, ReadOptions.of(config))) if wanted else []
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
    plan = Plan(config, info, router, start_seq, entries, on_progress or Plan.on_progress,
                request.slow_workers or {}, manifest_base,
                replay=lambda seq: itertools.dropwhile(lambda chunk: chunk.seq < seq, cut()))
    engine = LocalEngine(plan, out)
    return engine.run(stream)

