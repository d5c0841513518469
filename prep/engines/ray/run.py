"""`prep run --engine ray`: the checks of `run_pipeline`, a Ray cluster joined or started, the Ray engine."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable

import pyarrow.fs as pafs

from prep.core.accounting import EngineResult
from prep.core.chunk import Chunk, sample_texts
from prep.core.router import make_router
from prep.core.stage import selected_features
from prep.engines.ray.coordinator import Feed, RayEngine, first_line
from prep.engines.ray.files import GENERATOR_BACKPRESSURE, Split, plan_inputs, read_split, require_ray, resolve
from prep.engines.ray.output import Output
from prep.errors import UserError, interruptible
from prep.io.output import (
    output_fingerprint,
)
from prep.io.ownership import check_no_overlap
from prep.io.pieces import parse_chunk
from prep.io.records import ReadOptions
from prep.io.sources import InputFile, total_input_bytes
from prep.io.trainer_formats import output_spec
from prep.request import Plan, RunRequest
from prep.text.tokenizer import TokenizerInfo, choose_backend, describe_tokenizer, eos_id, wants_sample


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
        raise UserError(f"cannot reach the Ray cluster at {address}: {first_line(exc)}{hint}") from None
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
               "max_document_bytes": config.max_document_bytes, "raw": True}
    reader = ray.remote(read_split).options(num_cpus=0, scheduling_strategy="SPREAD", max_retries=3,
                                            _generator_backpressure_num_objects=GENERATOR_BACKPRESSURE)
    feed = Feed(reader, splits, options, ahead=max(2, math.ceil(workers / 8)))
    try:
        first = feed.peek()
        sample = []
        if first is not None and wants_sample(config.backend):  # one chunk, for the fast-path check
            seq, batch, meta = first
            chunk = Chunk(seq, ray.get(batch), meta["source"], meta["weight"], meta["input_bytes"],
                          meta["documents_in"], raw=meta["raw"])
            sample = sample_texts(parse_chunk(chunk, ReadOptions.of(config)))
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
    plan = Plan(config, info, router, start_seq, entries, on_progress or Plan.on_progress,
                request.slow_workers or {}, manifest_base)
    engine = RayEngine(plan, output, feed, writers)
    return engine.run()
