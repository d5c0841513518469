"""Tree memory of `prep run` on one huge document (issue 10, item 4): peak RSS summed over the process tree
(coordinator, writer, workers, forkserver; shared pages counted once per process that maps them), peak PSS
(shared pages split between their processes) and each role's own peak RSS, sampled by `prep bench`'s sampler.

Cases: a valid 43 MB document, a valid 100 MB one (with --max-document-bytes 128MiB), and the same 100 MB one
with the default limit (64 MiB: quarantined, read in bounded pieces). Text from the shared English corpus.

    .venv/bin/python scripts/document_memory.py [--tokenizer ../shared/tokenizers/gpt2.tokenizer.json]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

from prep.tools.bench import measure

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def write_document(path: Path, size: int) -> None:
    """One JSON line: a small document, one of `size` characters of real English, another small one."""
    with gzip.open(SHARED / "corpus" / "en_fortunes.jsonl.gz", "rt", encoding="utf-8") as f:
        base = "\n".join(json.loads(line)["text"] for line in itertools.islice(f, 2000))
    text = (base * (size // len(base) + 1))[:size]
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, doc in (("before", "a small one"), ("huge", text), ("after", "another small one")):
            f.write(json.dumps({"id": doc_id, "text": doc}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "gpt2.tokenizer.json"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--features", default="all")
    parser.add_argument("--case", action="append", help="run only these cases (43, 100, over): default all")
    args = parser.parse_args()
    cases = {"43": ("43 MB", 43_000_000, ()), "100": ("100 MB", 100_000_000, ("--max-document-bytes", "128MiB")),
             "over": ("100 MB over the limit", 100_000_000, ())}
    cases = [case for key, case in cases.items() if not args.case or key in args.case]
    with tempfile.TemporaryDirectory(prefix="prep-docmem-") as tmp:
        print(f"{'case':24} {'exit':>4} {'wall s':>7} {'tree RSS MB':>11} {'PSS MB':>7}  per role (own peak RSS MB)")
        for name, size, extra in cases:
            corpus = Path(tmp) / f"doc-{size}.jsonl"
            if not corpus.exists():
                write_document(corpus, size)
            out = Path(tmp) / "out"
            cmd = [sys.executable, "-m", "prep", "run", "--input", str(corpus), "--output", str(out), "--tokenizer",
                   args.tokenizer, "--backend", args.backend, "--workers", args.workers, "--features", args.features,
                   "--overwrite", "--no-progress", *extra]
            m = measure(cmd, dict(os.environ), timeout=3600, prep=True)
            counts = json.loads((out / "_manifest.json").read_text())["counts"] if m.returncode == 0 else {}
            print(f"{name:24} {m.returncode:>4} {m.wall_s:7.1f} {m.peak_rss_mb:11.0f} {m.peak_pss_mb:7.0f}  "
                  f"{m.peak_rss_by_role_mb}  out={counts.get('documents_out')} "
                  f"quarantined={counts.get('quarantined')}", flush=True)
            if m.returncode:
                print(m.stderr[-2000:])


if __name__ == "__main__":
    main()
