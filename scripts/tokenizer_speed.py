"""One core's tokenizing speed, MB/s of UTF-8 text, for each backend prep can pick in this environment.

    python scripts/tokenizer_speed.py [TOKENIZER_JSON] [MB]

Reads the first MB of text from ../shared/corpus (files in name order, every document whole), encodes it
once per backend in batches of 1,000 documents through prep's Backend API, one thread, and prints MB/s.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"

from prep.text.hf import tokenizers_major  # noqa: E402
from prep.text.tokenizer import choose_backend, describe_tokenizer, load_backend  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def slice_texts(megabytes: float) -> list[str]:
    """Documents in corpus order until `megabytes` MB of UTF-8."""
    texts, size = [], 0
    for path in sorted((SHARED / "corpus").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                texts.append(text)
                size += len(text.encode())
                if size >= megabytes * 1e6:
                    return texts
    return texts


def main() -> None:
    tokenizer = sys.argv[1] if len(sys.argv) > 1 else str(SHARED / "tokenizers" / "gpt2.tokenizer.json")
    texts = slice_texts(float(sys.argv[2]) if len(sys.argv) > 2 else 10)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    names = ["tokenizers"] if tokenizers_major() >= 1 else ["tokenizers", "tiktoken"]
    for requested in names:
        info = choose_backend(describe_tokenizer(tokenizer), requested, texts[:100])
        backend = load_backend(tokenizer, info.backend)
        start = time.process_time()
        tokens = sum(len(backend.encode_batch(texts[i : i + 1000])[0]) for i in range(0, len(texts), 1000))
        seconds = time.process_time() - start
        print(f"{info.backend:13} {megabytes:.1f} MB, {tokens:,} tokens: {megabytes / seconds:.1f} MB/s "
              f"(CPU {seconds:.2f} s, one thread)")


if __name__ == "__main__":
    main()
