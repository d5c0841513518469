"""Measure packing: `concat` against `bfd` at several seq_len, on a corpus (default: ../shared/corpus).

For each (method, seq_len): one `prep run` (all three formats), its manifest's packing figures and engine wall
time, against an unpacked run (Parquet only, and all three formats); then the packer alone, in this process,
over the unpacked run's rows (its CPU cost without the machine's noise). CPU s: the whole process tree's.

    .venv/bin/python scripts/packing_efficiency.py [--input DIR] [--seq-len 2048,8192] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prep.bench import _env, measure
from prep.formats import OutputSpec, Packer
from prep.tokenizer import eos_id

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FORMATS = ("--format", "parquet", "--format", "megatron", "--format", "llmc")


def run(args: list[str], inputs: str, out: Path, tokenizer: str, workers: int) -> dict:
    cmd = [sys.executable, "-m", "prep", "run", "--input", inputs, "--output", str(out), "--tokenizer", tokenizer,
           "--workers", str(workers), "--no-progress", "--overwrite", *args]
    measured = measure(cmd, _env(1), timeout=3600, prep=True)  # the bench's: CPU of the whole process tree
    if measured.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{measured.stderr}")
    return json.loads((out / "_manifest.json").read_text()) | {"cpu_s": sum(measured.cpu_s.values()),
                                                                "writer_cpu_s": measured.cpu_s.get("writer", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(SHARED / "corpus"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "gpt2.tokenizer.json"))
    parser.add_argument("--seq-len", default="2048,8192")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    lengths = [int(x) for x in args.seq_len.split(",")]
    work = Path(tempfile.mkdtemp(prefix="prep-packing-"))
    plain = run([], args.input, work / "plain", args.tokenizer, args.workers)
    binary = run(list(FORMATS), args.input, work / "binary", args.tokenizer, args.workers)
    docs, tokens = plain["counts"]["documents_out"], plain["counts"]["tokens"]
    print(f"corpus: {args.input}: {docs:,} documents, {tokens:,} tokens, "
          f"{plain['counts']['bytes_in'] / 1e6:.1f} MB of text; {args.workers} workers")
    for name, m in (("unpacked, Parquet only", plain), ("unpacked, + megatron + llmc", binary)):
        print(f"{name}: engine {m['timings']['wall_s']:.2f} s, CPU {m['cpu_s']:.1f} s "
              f"(writer {m['writer_cpu_s']:.1f} s)")
    tables = [pq.read_table(work / "plain" / s["file"], columns=["id", "input_ids"]) for s in plain["shards"]]
    print("method  seq_len  sequences  padding %  docs cut  docs/seq  engine s  CPU s  writer CPU s  packer alone s  "
          "packer Mtok/s")
    for seq_len in lengths:
        for method in ("concat", "bfd"):
            m = run([*FORMATS, "--pack-seq-len", str(seq_len), "--pack-method", method], args.input,
                    work / f"{method}-{seq_len}", args.tokenizer, args.workers)
            p = m["packing"]
            spec = OutputSpec(eos=eos_id(args.tokenizer, None), seq_len=seq_len, method=method, add_eos=True)
            t0 = time.process_time()
            for table in tables:
                packer = Packer(spec, table.schema.field("id").type)
                for batch in table.to_batches(max_chunksize=20_000):
                    packer.add(pa.Table.from_batches([batch]))
                packer.finish()
            alone = time.process_time() - t0
            print(f"{method:6}  {seq_len:7}  {p['sequences']:9,}  {100 * p['padding_fraction']:9.3f}  "
                  f"{p['documents_cut']:8,}  {p['docs_per_sequence']:8.2f}  {m['timings']['wall_s']:8.2f}  "
                  f"{m['cpu_s']:5.1f}  {m['writer_cpu_s']:12.1f}  {alone:14.2f}  {p['tokens'] / alone / 1e6:13.1f}")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
