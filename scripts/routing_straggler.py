"""Routers side by side on a real run, with and without a straggler (issue: random routing, measured).

Runs `prep run` once per (router, condition), interleaved and repeated, on the same corpus, and prints
wall time, throughput relative to the best run without a straggler, and how the bytes were spread.
The straggler is worker J slowed by FACTOR (`--debug-slow-worker J:FACTOR`: it sleeps (FACTOR-1) x its
busy time after each task, so its lost capacity is 1 - 1/FACTOR of one worker).

    .venv/bin/python scripts/routing_straggler.py --input /tmp/slice50.jsonl --workers 2 --slow 1:3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUTERS = ("random", "p2c", "weighted", "round-robin")


def one_run(args: argparse.Namespace, router: str, slow: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "prep", "run", "--input", *args.input, "--output", str(out), "--tokenizer",
           args.tokenizer, "--workers", str(args.workers), "--router", router, "--seed", "0", "--overwrite",
           "--no-progress", "--backend", args.backend]
    if slow:
        cmd += ["--debug-slow-worker", slow]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "_manifest.json").read_text())
    workers = manifest["routing"]["workers"]
    return {
        "router": router, "straggler": slow or "", "wall_s": wall, "engine_s": manifest["timings"]["wall_s"],
        "bytes_share": [round(w["bytes"] / max(1, manifest["counts"]["bytes_in"]), 3) for w in workers],
        "imbalance": manifest["routing"]["imbalance"], "tokens": manifest["counts"]["tokens"],
        "shards": [s["sha256"] for s in manifest["shards"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--tokenizer", default=str(Path(__file__).resolve().parents[2] / "shared" / "tokenizers"
                                                   / "gpt2.tokenizer.json"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slow", default="1:3", help="J:FACTOR")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for slow in (None, args.slow):
                for router in ROUTERS:
                    results.append(one_run(args, router, slow, Path(tmp) / "out"))
                    r = results[-1]
                    print(f"  {router:12s} straggler={r['straggler'] or '-':5s} engine {r['engine_s']:6.2f} s",
                          file=sys.stderr)
    hashes = {tuple(r["shards"]) for r in results}
    tokens = {r["tokens"] for r in results}
    assert len(hashes) == 1 and len(tokens) == 1, "routers changed the output"
    best = min(r["engine_s"] for r in results if not r["straggler"])
    factor = float(args.slow.split(":")[1])
    capacity = (args.workers - 1 + 1 / factor) / args.workers
    print(f"output identical across all {len(results)} runs; best engine time without straggler {best:.2f} s")
    print(f"straggler {args.slow}: capacity left {capacity:.3f} of {args.workers} workers "
          f"(so the best a router can do is throughput {capacity:.3f})")
    print(f"{'router':12s} {'straggler':9s} {'engine s':>9s} {'throughput':>11s}  bytes share per worker")
    for r in sorted(results, key=lambda r: (r["straggler"], ROUTERS.index(r["router"]))):
        print(f"{r['router']:12s} {r['straggler'] or '-':9s} {r['engine_s']:9.2f} {best / r['engine_s']:11.3f}  "
              f"{r['bytes_share']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"capacity": capacity, "best_s": best, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
