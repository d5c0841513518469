"""The actors of a Ray run: a file server for the tokenizer, the stage actors, the writer actors."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from prep.config import PipelineConfig
from prep.core.chunk import RawSpec
from prep.core.stage import input_stats
from prep.core.threads import single_thread_env
from prep.engines.ray.files import FsPath, publish_file
from prep.io.pieces import read_raw
from prep.io.records import ReadOptions
from prep.io.trainer_formats import OutputSpec
from prep.io.writer import (
    FILTERED_PARTIAL,
    QUARANTINE_PARTIAL,
    ShardWriter,
)


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
            pipeline = PipelineConfig(**(config | {"tokenizer": path}))
            self.stage = Stage(pipeline, backend)
        self.read_options = ReadOptions.of(pipeline)
        self.slow = slow

    def ready(self) -> str:
        return _node()

    def process(self, batch: pa.RecordBatch, start: int, stop: int,
                raw: RawSpec | None = None) -> tuple[tuple[dict, dict], pa.RecordBatch]:
        """Rows [start, stop) of a chunk through the stage; a raw chunk's units are read here first."""
        started, cpu_started = time.perf_counter(), time.process_time()  # busy is wall time, its parts CPU
        parsed = None
        if raw is not None:
            parsed = read_raw(batch, raw, self.read_options, start, stop)
            batch = parsed.batch
        elif start or stop < len(batch):
            batch = batch.slice(start, stop - start)
        parsed_at = time.process_time()
        output, stats = self.stage(batch)
        finished = time.perf_counter()
        if self.slow > 1.0:  # a straggler on purpose, for routing experiments
            time.sleep((finished - started) * (self.slow - 1.0))
            finished = time.perf_counter()
        timing = {"busy_s": finished - started, "parse_s": parsed_at - cpu_started, "filter_s": stats.filter_s,
                  "tokenize_s": stats.tokenize_s,
                  "features_s": stats.features_s, "transport_s": 0.0}
        stats_dict = input_stats(asdict(stats), parsed)
        if self.stage.dedup:  # the driver decides duplicates in seq order: it needs the ids beside the keys
            stats_dict["dedup_ids"] = output.column("id").to_pylist()
        return (stats_dict, timing), output


class WriterActor:
    """Writes whole shards it owns: fetch the results, `ShardWriter` into staging, publish atomically."""

    def __init__(self, out: FsPath, shard_bytes: int, compression: str, formats: OutputSpec) -> None:
        from prep.core.allocator import no_transparent_huge_pages

        no_transparent_huge_pages()  # as the local writer: its process is this actor's alone
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
            writer.commit()  # the shard, whether its last chunk ended it (then it is sealing) or not
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
