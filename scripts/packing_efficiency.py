"""Measure packing: `concat` against `bfd` at several seq_len, on a corpus (default: ../shared/corpus).

An unpacked run (or `--unpacked OUT`, one already made over the same input) is packed by prep's packer, in this
process, shard by shard as the writer does: the manifest's figures (sequences, padding, documents cut, documents
per sequence) and the packer's CPU time, which a busy machine does not inflate. With `--prep-runs`, prep itself
also runs each variant (all three formats), its manifest must agree, and the CPU of its process tree is shown.

    .venv/bin/python scripts/packing_efficiency.py [--input DIR] [--seq-len 2048,8192] [--unpacked OUT]
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

from prep.io.trainer_formats import OutputSpec, Packer, packing_summary
from prep.text.tokenizer import eos_id
from prep.tools.bench import _env, measure

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FORMATS = ("--format", "parquet", "--format", "megatron", "--format", "llmc")  # with --prep-runs


def run(args: list[str], inputs: str, out: Path, tokenizer: str, workers: int) -> dict:
    cmd = [sys.executable, "-m", "prep", "run", "--input", inputs, "--output", str(out), "--tokenizer", tokenizer,
           "--workers", str(workers), "--no-progress", "--overwrite", *args]
    measured = measure(cmd, _env(1), timeout=3600, prep=True)  # the bench's: CPU of the whole process tree
    if measured.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{measured.stderr}")
    return json.loads((out / "_manifest.json").read_text()) | {"cpu_s": sum(measured.cpu_s.values()),
                                                                "writer_cpu_s": measured.cpu_s.get("writer", 0.0)}


def pack_alone(tables: list[pa.Table], spec: OutputSpec) -> tuple[dict, float]:
    """The packer over an unpacked run's shards, in this process: (manifest-style figures, CPU seconds)."""
    t0 = time.process_time()
    stats = []
    for table in tables:
        packer = Packer(spec, table.schema.field("id").type)
        for batch in table.to_batches(max_chunksize=20_000):
            packer.add(pa.Table.from_batches([batch]))
        packer.finish()
        stats.append(packer.stats)
    return packing_summary(stats), time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(SHARED / "corpus"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "gpt2.tokenizer.json"))
    parser.add_argument("--seq-len", default="2048,8192")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unpacked", help="an unpacked prep run over --input to pack (default: run one)")
    parser.add_argument("--prep-runs", action="store_true", help="also run prep for each method and seq_len")
    args = parser.parse_args()
    lengths = [int(x) for x in args.seq_len.split(",")]
    work = Path(tempfile.mkdtemp(prefix="prep-packing-"))
    if args.unpacked:
        unpacked = Path(args.unpacked)
        plain = json.loads((unpacked / "_manifest.json").read_text())
    else:
        unpacked = work / "plain"
        plain = run([], args.input, unpacked, args.tokenizer, args.workers)
        print(f"unpacked run: engine {plain['timings']['wall_s']:.2f} s, CPU {plain['cpu_s']:.1f} s "
              f"(writer {plain['writer_cpu_s']:.1f} s)")
    docs, tokens = plain["counts"]["documents_out"], plain["counts"]["tokens"]
    print(f"corpus: {args.input}: {docs:,} documents, {tokens:,} tokens, "
          f"{plain['counts']['bytes_in'] / 1e6:.1f} MB of text, {len(plain['shards'])} shard(s)")
    tables = [pq.read_table(unpacked / s["file"], columns=["id", "input_ids"]) for s in plain["shards"]]
    print("method  seq_len  sequences  padding %  docs cut  docs/seq  packer CPU s  packer Mtok/s")
    for seq_len in lengths:
        for method in ("concat", "bfd"):
            spec = OutputSpec(eos=eos_id(args.tokenizer, None), seq_len=seq_len, method=method, add_eos=True)
            p, cpu = pack_alone(tables, spec)
            print(f"{method:6}  {seq_len:7}  {p['sequences']:9,}  {100 * p['padding_fraction']:9.3f}  "
                  f"{p['documents_cut']:8,}  {p['docs_per_sequence']:8.2f}  {cpu:12.2f}  "
                  f"{p['tokens'] / cpu / 1e6:13.1f}")
            if args.prep_runs:  # the same figures from prep itself, and the run's cost
                m = run([*FORMATS, "--pack-seq-len", str(seq_len), "--pack-method", method], args.input,
                        work / f"{method}-{seq_len}", args.tokenizer, args.workers)
                assert m["packing"] == p, (m["packing"], p)
                print(f"        prep run: engine {m['timings']['wall_s']:.2f} s, CPU {m['cpu_s']:.1f} s "
                      f"(writer {m['writer_cpu_s']:.1f} s)")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
