"""CPU ms per MiB of text of `compute_features`, one thread, over a slice of the shared corpus in 1 MiB batches.

    python scripts/feature_speed.py [MB] [FEATURES]      # FEATURES: comma-separated, default all

The same first MB/22 of every corpus file, tokenized with GPT-2 beforehand (not timed); each batch is timed three
times and the best round is printed, so that the load of a shared machine shows less.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
from tokenizers import Tokenizer

from prep.text.features import FEATURES, compute_features

SHARED = Path(__file__).resolve().parents[2] / "shared"


def batches(mb: float) -> list[tuple[pa.Array, pa.Array]]:
    files = sorted((SHARED / "corpus").glob("*.jsonl.gz"))
    per_file = mb * 1e6 / len(files)
    texts: list[str] = []
    for path in files:
        size = 0
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                texts.append(json.loads(line)["text"])
                size += len(texts[-1].encode())
                if size >= per_file:
                    break
    tokenizer = Tokenizer.from_file(str(SHARED / "tokenizers" / "gpt2.tokenizer.json"))
    out, current, size = [], [], 0
    for text in texts:
        current.append(text)
        size += len(text.encode())
        if size >= 1 << 20 or text is texts[-1]:
            ids = [e.ids for e in tokenizer.encode_batch(current)]
            out.append((pa.array(current, pa.string()), pa.array(ids, pa.list_(pa.uint32()))))
            current, size = [], 0
    return out


def main() -> None:
    mb = float(sys.argv[1]) if len(sys.argv) > 1 else 25.0
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(FEATURES)
    work = batches(mb)
    mib = sum(texts.nbytes for texts, _ in work) / 2**20  # offsets included: within 1%
    compute_features(*work[0], names)  # loads the compiled pass
    rounds = []
    for _ in range(3):
        start = time.process_time()
        for texts, ids in work:
            compute_features(texts, ids, names)
        rounds.append((time.process_time() - start) * 1000 / mib)
    print(f"{mib:.1f} MiB in {len(work)} batches, {len(names)} features: {min(rounds):.1f} CPU ms per MiB "
          f"(rounds: {', '.join(f'{r:.1f}' for r in rounds)})")


if __name__ == "__main__":
    main()
