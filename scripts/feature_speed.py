"""CPU ms per MiB of text of `compute_features`, one thread, over a slice of the shared corpus in 1 MiB batches.

    python scripts/feature_speed.py [MB] [FEATURES]      # FEATURES: comma-separated, default all
    python scripts/feature_speed.py tiny [FEATURES]      # µs per one-line document instead

The same first MB/22 of every corpus file, tokenized with GPT-2 beforehand (not timed); each batch is timed three
times and the best round is printed, so that the load of a shared machine shows less. `tiny`: the non-blank lines
of en_fortunes as documents (50,598, 47 characters on average), in batches of 10,000, three ids each.
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


def tiny_batches(count: int = 100_000, size: int = 10_000) -> list[tuple[pa.Array, pa.Array]]:
    lines: list[str] = []
    with gzip.open(SHARED / "corpus" / "en_fortunes.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            lines += [text for text in json.loads(line)["text"].split("\n") if text.strip()]
            if len(lines) >= count:
                break
    lines = lines[:count]
    return [(pa.array(lines[i : i + size]), pa.array([[1, 2, 3]] * len(lines[i : i + size]), pa.list_(pa.uint32())))
            for i in range(0, len(lines), size)]


def main() -> None:
    tiny = len(sys.argv) > 1 and sys.argv[1] == "tiny"
    mb = 25.0 if tiny or len(sys.argv) < 2 else float(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(FEATURES)
    work = tiny_batches() if tiny else batches(mb)
    mib = sum(texts.nbytes for texts, _ in work) / 2**20  # offsets included: within 1%
    compute_features(*work[0], names)  # loads the compiled pass
    rounds = []
    for _ in range(3):
        start = time.process_time()
        for texts, ids in work:
            compute_features(texts, ids, names)
        rounds.append((time.process_time() - start) * 1000 / mib)
    if tiny:
        documents = sum(len(texts) for texts, _ in work)
        per_document = [r * mib / 1000 / documents * 1e6 for r in rounds]
        print(f"{documents:,} one-line documents, {len(names)} features: {min(per_document):.2f} CPU µs per document")
        return
    print(f"{mib:.1f} MiB in {len(work)} batches, {len(names)} features: {min(rounds):.1f} CPU ms per MiB "
          f"(rounds: {', '.join(f'{r:.1f}' for r in rounds)})")


if __name__ == "__main__":
    main()
