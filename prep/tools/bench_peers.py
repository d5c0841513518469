"""What `prep bench` compares `prep run` with, each run as a child process of its own.

`python -m prep.tools.bench_peers KIND --input DIR_OR_FILE --tokenizer PATH --workers N --output DIR`

* `ceiling-tokenizers`, `ceiling-tiktoken`: one process, one thread, the backend alone over
  texts already in memory, no output; the times printed (wall and CPU) cover encoding only.
  With `--workers N`: N such processes at once, each over every N-th batch.
* `pipeline-tokenizers`, `pipeline-tiktoken`: the pipeline ceiling: one process, one thread,
  read -> parse -> tokenize -> write over the JSON Lines files themselves (raw blocks of about
  `--batch-bytes` cut at line ends, `pyarrow.json` per block, the backend's batch call, zstd
  Parquet of `id`, `input_ids`, `num_tokens`); the times printed cover all four, from the
  first read to the closed file. With `--workers N`: N such processes at once, each over every
  N-th block, each writing its own file.
* `hf-threads`: one process, tokenizers' own thread pool (N threads), then pyarrow Parquet.
* `pool-batch`: a plain `multiprocessing.Pool(N)`: the parent reads lines and sends batches of
  1,000; each worker runs `json.loads` and the backend's batch call (1.x: `encode_batch`, then
  `ids_array`; 0.2x: `encode_batch_fast`); the parent writes zstd Parquet of `id`,
  `input_ids`, `num_tokens`, no features.
* `pool`: Megatron-style (`tools/preprocess_data.py`): `multiprocessing.Pool.imap` over raw
  JSON lines, one document per call, the parent writing a `.bin` of ids and an `.idx` of lengths.
* `datasets`: `load_dataset("json")`, `map(batched=True, num_proc=N)`, `to_parquet`.
* `datatrove`: `LocalPipelineExecutor` with N tasks: JsonlReader, tokenize, ParquetWriter.

Each prints one JSON line; `output_tokens` counts the tokens a run actually wrote, so a
fast wrong answer is caught by the bench, not taken on trust.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import mmap
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

PEERS = ("hf-threads", "pool", "pool-batch", "datasets", "datatrove")
CEILINGS = ("ceiling-tokenizers", "ceiling-tiktoken")
PIPELINES = ("pipeline-tokenizers", "pipeline-tiktoken")
DOCS_PER_BATCH = 1000  # the batch size users reach for (datasets' map default)
MEGATRON_CHUNKSIZE = 32  # pool.imap chunksize in Megatron-LM's preprocess_data.py
IDS = pa.list_(pa.uint32())
JSONL_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])
OUTPUT_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", IDS), ("num_tokens", pa.int32())])


def input_files(path: str | Path) -> list[Path]:
    """The slice's JSON Lines files, in a fixed order."""
    path = Path(path)
    return sorted(path.glob("*.jsonl")) if path.is_dir() else [path]


def _batched(items: Iterator, n: int) -> Iterator[list]:
    """itertools.batched, which Python 3.11 lacks."""
    items = iter(items)
    return iter(lambda: list(itertools.islice(items, n)), [])


def _raw_lines(files: list[Path]) -> Iterator[str]:
    for f in files:
        with open(f, encoding="utf-8") as fh:
            yield from fh


def read_text_column(files: list[Path]) -> pa.ChunkedArray:
    """All texts of the slice as Arrow (one block per file, so a 100 MB line still parses)."""
    columns = []
    for f in files:
        options = pajson.ReadOptions(block_size=min(2**31 - 1, max(2**20, f.stat().st_size + 1)))
        columns.extend(pajson.read_json(f, read_options=options).column("text").chunks)
    return pa.chunked_array(columns, pa.string())


def text_batches(texts: pa.ChunkedArray, batch_bytes: int) -> list[list[str]]:
    """Consecutive documents cut into batches of about `batch_bytes` of text, like prep's chunks."""
    lengths = pc.binary_length(texts).to_numpy()
    cuts = np.searchsorted(np.cumsum(lengths), np.arange(batch_bytes, lengths.sum() + batch_bytes, batch_bytes))
    bounds = np.unique(np.concatenate([[0], np.minimum(cuts + 1, len(lengths))]))
    return [texts.slice(a, b - a).to_pylist() for a, b in itertools.pairwise(bounds.tolist())]


def _counter(tokenizer: str, backend: str) -> Callable[[list[str]], int]:
    """A function that encodes one batch with the backend and returns its token count."""
    if backend == "tiktoken":
        from prep.text.tiktoken_backend import convert

        fast = convert(tokenizer)
        return lambda batch: int(fast.encode_batch(batch)[1][-1])
    from prep.text.hf import hf_encode_ids, load_hf_tokenizer, tokenizers_major

    if tokenizers_major() >= 1:  # prep's backend, a text at a time: 1.x's encode_batch runs two threads
        encode = _encoder(tokenizer, backend)
        return lambda batch: int(encode(batch)[1][-1])
    hf = load_hf_tokenizer(tokenizer)
    return lambda batch: sum(map(len, hf_encode_ids(hf, batch)))


def _encoder(tokenizer: str, backend: str) -> Callable[[list[str]], tuple[np.ndarray, np.ndarray]]:
    """The backend's batch call as prep makes it, texts -> (uint32 ids end to end, int64 offsets): tokenizers 1.x
    `encode_batch` then each `ids_array`, 0.2x `encode_batch_fast`, or the converted tiktoken backend."""
    if backend == "tiktoken":
        from prep.text.tiktoken_backend import convert

        return convert(tokenizer).encode_batch
    from prep.text.tokenizer import hf_backend

    return hf_backend(tokenizer).encode_batch


def _timed(batches: list[list[str]], count: Callable[[list[str]], int]) -> tuple[float, float, float, int]:
    """(start, end, CPU seconds, tokens) of encoding every batch."""
    started, cpu = time.perf_counter(), time.process_time()
    tokens = sum(count(batch) for batch in batches)
    return started, time.perf_counter(), time.process_time() - cpu, tokens


def _share(conn: Connection, barrier: object, prepare: Callable[[], Callable[[], tuple]]) -> None:
    work = prepare()  # loading the tokenizer is not timed
    barrier.wait()  # every process starts at once
    conn.send(work())


def _at_once(prepares: list[Callable[[], Callable[[], tuple]]]) -> list[tuple]:
    """Each `prepare()` returns the work to time; with more than one, each runs in a process of its own, all
    starting at a barrier. The work returns (start, end, CPU seconds, tokens, ...)."""
    if len(prepares) == 1:
        return [prepares[0]()()]
    ctx = multiprocessing.get_context("fork")  # the children share the parent's data; they never touch Arrow
    barrier = ctx.Barrier(len(prepares))
    pipes = [ctx.Pipe(duplex=False) for _ in prepares]
    procs = [ctx.Process(target=_share, args=(send, barrier, prepare))
             for (_, send), prepare in zip(pipes, prepares, strict=True)]
    for proc in procs:
        proc.start()
    results = [receive.recv() for receive, _ in pipes]
    for proc in procs:
        proc.join()
    return results


def _prepare_count(batches: list[list[str]], tokenizer: str, backend: str) -> Callable[[], tuple]:
    return functools.partial(_timed, batches, _counter(tokenizer, backend))


def _timing(results: list[tuple]) -> dict:
    """Wall from the first start to the last end, CPU and tokens summed."""
    return {"seconds": max(r[1] for r in results) - min(r[0] for r in results),
            "cpu_seconds": sum(r[2] for r in results), "tokens": sum(r[3] for r in results)}


def ceiling(files: list[Path], tokenizer: str, backend: str, batch_bytes: int, workers: int = 1) -> dict:
    """One thread of one backend over texts already in memory: the speed no pipeline can beat.

    With workers > 1, that many one-thread processes at once, each over every N-th batch: what
    N cores really give on this machine (shared caches, memory bandwidth, neighbours' load).
    """
    texts = read_text_column(files)
    batches = text_batches(texts, batch_bytes)
    results = _at_once([functools.partial(_prepare_count, batches[k::workers], tokenizer, backend)
                        for k in range(workers)])
    return _timing(results) | {"documents": len(texts)}


def raw_blocks(files: list[Path], block_bytes: int) -> list[tuple[Path, int, int]]:
    """The files as (file, start, end) byte ranges of about `block_bytes`, each ending at a line end (a longer
    line makes a longer block), found without reading more of a file than a page per block."""
    blocks = []
    for f in files:
        size = f.stat().st_size
        if not size:
            continue
        with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            start = 0
            while start < size:
                newline = view.find(b"\n", start + block_bytes - 1) if start + block_bytes < size else -1
                end = size if newline < 0 else newline + 1
                blocks.append((f, start, end))
                start = end
    return blocks


def parquet_writer(path: Path) -> pq.ParquetWriter:
    """zstd Parquet of id, input_ids, num_tokens, without a dictionary (as prep writes them)."""
    return pq.ParquetWriter(path, OUTPUT_SCHEMA, compression="zstd", use_dictionary=False)


def ids_table(ids: pa.Array, flat: np.ndarray, offsets: np.ndarray) -> pa.Table:
    """The output table from flat ids and int64 offsets, built from the buffers: no Python lists, and no `pa.array`
    (whose first use imports pandas, ~0.3 s, which a one-off cost would charge to the ceiling's speed)."""
    from prep.text.arrow import arrow_of

    input_ids = pa.ListArray.from_arrays(arrow_of(offsets, pa.int32()), arrow_of(flat, pa.uint32()))
    return pa.Table.from_arrays([ids, input_ids, arrow_of(np.diff(offsets), pa.int32())], schema=OUTPUT_SCHEMA)


def _pipeline(files: list[Path], part: int, workers: int, encode: Callable, out: Path,
              block_bytes: int) -> tuple[float, float, float, int, int]:
    """Read -> parse -> tokenize -> write every `workers`-th block, from `part`: (start, end, CPU, tokens, docs)."""
    started, cpu = time.perf_counter(), time.process_time()
    tokens = documents = 0
    parse = pajson.ParseOptions(explicit_schema=JSONL_SCHEMA, unexpected_field_behavior="ignore")
    with parquet_writer(out / f"part-{part:03d}.parquet") as writer:
        for path, start, end in raw_blocks(files, block_bytes)[part::workers]:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.pread(fd, end - start, start)
            finally:
                os.close(fd)
            table = pajson.read_json(pa.BufferReader(data), parse_options=parse, read_options=pajson.ReadOptions(
                use_threads=False, block_size=len(data) + 1))
            flat, offsets = encode(table.column("text").to_pylist())
            writer.write_table(ids_table(table.column("id").combine_chunks(), flat, offsets),
                               row_group_size=table.num_rows)
            tokens += int(offsets[-1])
            documents += table.num_rows
    return started, time.perf_counter(), time.process_time() - cpu, tokens, documents


def _prepare_pipeline(files: list[Path], part: int, workers: int, tokenizer: str, backend: str, out: Path,
                      block_bytes: int) -> Callable[[], tuple]:
    return functools.partial(_pipeline, files, part, workers, _encoder(tokenizer, backend), out, block_bytes)


def pipeline_ceiling(files: list[Path], tokenizer: str, backend: str, block_bytes: int, out: Path,
                     workers: int = 1) -> dict:
    """The pipeline ceiling: one thread reading, parsing, tokenizing and writing, or N such processes at once
    (each over every N-th block, its own output file): what a pipeline without coordination could do here."""
    results = _at_once([functools.partial(_prepare_pipeline, files, k, workers, tokenizer, backend, out, block_bytes)
                        for k in range(workers)])
    return _timing(results) | {"documents": sum(r[4] for r in results)}


def hf_threads(files: list[Path], tokenizer: str, out: Path) -> dict:
    """One process: json.loads per line, tokenizers' encode_batch on its own threads, pyarrow Parquet."""
    from prep.text.hf import hf_encode_ids, load_hf_tokenizer

    hf = load_hf_tokenizer(tokenizer)
    schema = pa.schema([("id", pa.string()), ("input_ids", IDS)])
    with pq.ParquetWriter(out / "data.parquet", schema, compression="zstd") as writer:
        for lines in _batched(_raw_lines(files), DOCS_PER_BATCH):
            docs = [json.loads(line) for line in lines]
            id_lists = hf_encode_ids(hf, [d["text"] for d in docs])
            writer.write_table(pa.table({"id": [d["id"] for d in docs],
                                         "input_ids": pa.array(id_lists, IDS)}, schema=schema))
    return {}


_POOL_TOKENIZER = None


def _pool_init(tokenizer: str) -> None:
    global _POOL_TOKENIZER
    from prep.text.hf import load_hf_tokenizer

    _POOL_TOKENIZER = load_hf_tokenizer(tokenizer)


def _pool_encode(line: str) -> tuple[list[int], int]:
    return _POOL_TOKENIZER.encode(json.loads(line)["text"]).ids, len(line)


def pool(files: list[Path], tokenizer: str, workers: int, out: Path) -> dict:
    """Megatron-LM's way: raw lines to a Pool, one document per call; the parent writes .bin/.idx."""
    from prep.text.tokenizer import describe_tokenizer

    dtype = np.uint16 if describe_tokenizer(tokenizer).vocab_size < 65500 else np.int32
    sizes = []
    with multiprocessing.Pool(workers, initializer=_pool_init, initargs=(tokenizer,)) as workers_pool, \
            open(out / "data.bin", "wb") as binary:
        for ids, _ in workers_pool.imap(_pool_encode, _raw_lines(files), MEGATRON_CHUNKSIZE):
            binary.write(np.asarray(ids, dtype=dtype).tobytes())
            sizes.append(len(ids))
    np.save(out / "data.idx.npy", np.asarray(sizes, dtype=np.int64))
    return {}


_POOL_BACKEND = None


def _pool_batch_init(tokenizer: str) -> None:
    global _POOL_BACKEND
    _POOL_BACKEND = _encoder(tokenizer, "tokenizers")


def _pool_batch_encode(lines: list[str]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    docs = [json.loads(line) for line in lines]
    flat, offsets = _POOL_BACKEND([d["text"] for d in docs])
    return [d["id"].encode() for d in docs], flat, offsets


def pool_batch(files: list[Path], tokenizer: str, workers: int, out: Path) -> dict:
    """A plain Pool: the parent sends batches of 1,000 raw lines; the workers parse and tokenize them (the batch
    call of the installed tokenizers); the parent writes zstd Parquet of id, input_ids, num_tokens. Its Arrow
    arrays are built from buffers, as prep builds them (`pa.array` would import pandas: ~0.3 s of its time)."""
    from prep.text.arrow import binary_array

    with multiprocessing.Pool(workers, initializer=_pool_batch_init, initargs=(tokenizer,)) as workers_pool, \
            parquet_writer(out / "data.parquet") as writer:
        for ids, flat, offsets in workers_pool.imap(_pool_batch_encode, _batched(_raw_lines(files), DOCS_PER_BATCH)):
            writer.write_table(ids_table(binary_array(ids, pa.string()), flat, offsets))
    return {}


_HF_MAP_TOKENIZER: dict = {}


def _hf_map(batch: dict, tokenizer: str) -> dict:
    if tokenizer not in _HF_MAP_TOKENIZER:
        from prep.text.hf import load_hf_tokenizer

        _HF_MAP_TOKENIZER[tokenizer] = load_hf_tokenizer(tokenizer)
    from prep.text.hf import hf_encode_ids

    return {"input_ids": hf_encode_ids(_HF_MAP_TOKENIZER[tokenizer], batch["text"])}


def hf_datasets(files: list[Path], tokenizer: str, workers: int, out: Path) -> dict:
    """The `datasets` way: load_dataset("json"), map(batched=True, num_proc=N), to_parquet."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train",
                               cache_dir=str(out / "cache"))
    ds = ds.map(functools.partial(_hf_map, tokenizer=tokenizer), batched=True,
                num_proc=workers if workers > 1 else None, remove_columns=[c for c in ds.column_names if c != "id"])
    ds.to_parquet(str(out / "data.parquet"))  # datasets picks the codec itself (snappy)
    return {}


def _datatrove_tokenize(tokenizer: str, data: Iterator, rank: int = 0, world_size: int = 1) -> Iterator:
    """A datatrove pipeline step: ids into each document's metadata, a batch at a time."""
    from prep.text.hf import hf_encode_ids, load_hf_tokenizer

    hf = load_hf_tokenizer(tokenizer)
    for docs in _batched(data, DOCS_PER_BATCH):
        for doc, ids in zip(docs, hf_encode_ids(hf, [d.text for d in docs]), strict=True):
            doc.metadata = {"input_ids": ids}
            yield doc


def _datatrove_adapter(_writer: object, document: object) -> dict:
    return {"id": document.id, "input_ids": document.metadata["input_ids"]}


def datatrove_missing() -> list[str]:
    """What the datatrove peer needs and this environment lacks (neither is a dependency of prep): datatrove, and
    orjson, which datatrove's JsonlReader imports when it runs (datatrove does not install it)."""
    import importlib.util

    return [name for name in ("datatrove", "orjson") if importlib.util.find_spec(name) is None]


def datatrove(files: list[Path], tokenizer: str, workers: int, out: Path) -> dict:
    """datatrove's local executor, one task per worker (it splits work by file)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter

    folder = files[0].parent
    names = {f.name for f in files}
    if len(names) != len(list(folder.glob("*.jsonl"))):
        raise SystemExit("datatrove peer: the input must be a directory of .jsonl files")
    schema = pa.schema([("id", pa.string()), ("input_ids", IDS)])
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(folder), glob_pattern="*.jsonl", add_file_path=False),
            functools.partial(_datatrove_tokenize, tokenizer),
            ParquetWriter(str(out / "data"), compression="zstd", adapter=_datatrove_adapter, schema=schema),
        ],
        tasks=workers, workers=workers, logging_dir=str(out / "logs"), skip_completed=False,
    ).run()
    return {}


def output_tokens(kind: str, out: Path) -> int:
    """Tokens a peer actually wrote, read back from its output."""
    if kind == "pool":
        return int(np.load(out / "data.idx.npy").sum())
    total = 0
    for path in sorted(out.rglob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(columns=["input_ids"]):
            total += int(pc.sum(pc.list_value_length(batch.column(0))).as_py() or 0)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prep.tools.bench_peers", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=CEILINGS + PIPELINES + PEERS)
    parser.add_argument("--input", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output")
    parser.add_argument("--batch-bytes", type=int, default=2**20)
    args = parser.parse_args(argv)
    files = input_files(args.input)
    if args.output is None and args.kind not in CEILINGS:
        parser.error(f"{args.kind} writes its output: give --output DIR")
    out = Path(args.output) if args.output else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if args.kind in CEILINGS:
        result = ceiling(files, args.tokenizer, args.kind.split("-", 1)[1], args.batch_bytes, args.workers)
    elif args.kind in PIPELINES:
        result = pipeline_ceiling(files, args.tokenizer, args.kind.split("-", 1)[1], args.batch_bytes, out,
                                  args.workers)
    elif args.kind == "hf-threads":
        result = hf_threads(files, args.tokenizer, out)
    elif args.kind == "pool":
        result = pool(files, args.tokenizer, args.workers, out)
    elif args.kind == "pool-batch":
        result = pool_batch(files, args.tokenizer, args.workers, out)
    elif args.kind == "datasets":
        result = hf_datasets(files, args.tokenizer, args.workers, out)
    else:
        result = datatrove(files, args.tokenizer, args.workers, out)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
