"""Dedup quality on real text, and the index's cost at scale.

1. Builds a corpus from ../shared/corpus (English files) with planted duplicates of sampled originals: exact
   copies, whitespace variants, case variants, copies with 1%, 5% and 20% of words changed, paragraphs
   shuffled. Runs `prep run --dedup exact` and `--dedup exact,near` on it and reports, per planted kind, the
   share removed, and precision / recall against the planted truth (exact: copies and whitespace variants; near:
   also case, 1%, 5% and shuffled; a 20% change is not a near duplicate at the default 14 x 8 bands). Removed
   originals (real duplicates in the corpus, e.g. licence text in man pages) are counted apart, with the exact
   Jaccard similarity of each removal's shingles to the document it duplicates.
2. Times the writer-side index (prep.core.dedup.Deduper) on N synthetic documents: documents per second and
   resident bytes per document, and the workers' signature cost per MiB of real text.

    .venv/bin/python scripts/dedup_quality.py [--docs 1000000] [--sample 400]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FILES = ["en_manpages", "en_python_docs", "en_wikitext2", "en_us_speeches", "en_debian_docs", "en_gutenberg_nltk",
         "en_jargon_file", "en_foldoc"]
KINDS = ["exact", "whitespace", "case", "1pct", "5pct", "20pct", "shuffled"]
EXACT_TRUTH = {"exact", "whitespace"}
NEAR_TRUTH = EXACT_TRUTH | {"case", "1pct", "5pct", "shuffled"}


def originals(limit_per_file: int) -> list[dict]:
    docs, seen = [], set()
    for name in FILES:
        with gzip.open(SHARED / "corpus" / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
            taken = 0
            for line in f:
                text = json.loads(line).get("text") or ""
                norm = " ".join(text.split())
                if len(norm.split()) < 80 or norm in seen:
                    continue
                seen.add(norm)
                docs.append({"id": f"{name}:{taken}", "text": text})
                taken += 1
                if taken == limit_per_file:
                    break
    return docs


def variant(text: str, kind: str, rng: random.Random) -> str:
    if kind == "exact":
        return text
    if kind == "whitespace":
        return "  " + "\n\n".join(" \t ".join(line.split()) for line in text.splitlines()) + "\n"
    if kind == "case":
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == "shuffled":
        paras = [p for p in text.split("\n\n") if p.strip()]
        if len(paras) < 3:
            paras = text.splitlines()
        rng.shuffle(paras)
        return "\n\n".join(paras)
    words = text.split()
    frac = {"1pct": 0.01, "5pct": 0.05, "20pct": 0.20}[kind]
    for j in rng.sample(range(len(words)), max(1, round(frac * len(words)))):
        words[j] = f"zz{rng.randrange(10**9)}"
    return " ".join(words)


def shingles(text: str, n: int = 5) -> set:
    w = text.lower().split()
    return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / max(1, len(x | y))


def quality(work: Path, per_file: int, sample: int, workers: int) -> None:
    rng = random.Random(7)
    docs = originals(per_file)
    base = rng.sample(docs, min(sample, len(docs)))
    planted = []
    for i, d in enumerate(base):
        kind = KINDS[i % len(KINDS)]
        planted.append({"id": f"plant-{kind}-{i}", "text": variant(d["text"], kind, rng), "kind": kind,
                        "of": d["id"]})
    corpus = docs + planted  # every original comes before its planted copies
    texts = {d["id"]: d["text"] for d in corpus}
    path = work / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in corpus))
    print(f"corpus: {len(docs)} originals from {len(FILES)} files, {len(planted)} planted "
          f"({len(planted) // len(KINDS)} of each kind), {path.stat().st_size / 2**20:.1f} MiB")
    for method, truth in (("exact", EXACT_TRUTH), ("exact,near", NEAR_TRUTH)):
        out = work / method.replace(",", "_")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prep", "run", "-i", str(path), "-o", str(out), "--tokenizer",
                        str(SHARED / "tokenizers" / "gpt2.tokenizer.json"), "--workers", str(workers),
                        "--no-progress", "--dedup", method, "--keep-filtered", "--overwrite"],
                       check=True, capture_output=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        removed = {r["id"]: r for r in pq.read_table(out / "_filtered.parquet").to_pylist()
                   if r["rule"].startswith("dedup")}
        should = {p["id"] for p in planted if p["kind"] in truth}
        hit = should & set(removed)
        precision = len(hit) / max(1, len(removed))
        recall = len(hit) / max(1, len(should))
        print(f"\n--dedup {method}: removed {len(removed)} in {wall:.1f} s; precision {precision:.3f}, "
              f"recall {recall:.3f} (planted truth)")
        for kind in KINDS:
            ids = [p["id"] for p in planted if p["kind"] == kind]
            print(f"  {kind:<11} removed {sum(i in removed for i in ids):>4} / {len(ids)}")
        real = [r for i, r in removed.items() if not i.startswith("plant-")]
        if real:
            sims = [jaccard(texts[r["id"]], texts[r["duplicate_of"]]) for r in real]
            by_file: dict[str, int] = {}
            for r in real:
                by_file[r["id"].split(":")[0]] = by_file.get(r["id"].split(":")[0], 0) + 1
            print(f"  originals removed (real duplicates in the corpus): {len(real)}, {by_file}; exact Jaccard to "
                  f"the kept one >= 0.8 for {sum(s >= 0.8 for s in sims)}, median {np.median(sims):.2f}")
        wrong = [i for i in removed if i.startswith("plant-") and i not in should]
        if wrong:
            sims = [jaccard(texts[i], texts[removed[i]["duplicate_of"]]) for i in wrong]
            print(f"  planted non-duplicates removed: {len(wrong)}, exact Jaccard {np.round(sims, 2).tolist()}")


def scale(n: int) -> None:
    from prep.core.dedup import Deduper, DedupSettings, MinHasher

    for settings in (DedupSettings(exact=True), DedupSettings(exact=True, near=True)):
        rng = np.random.default_rng(0)
        batch = 10_000
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        deduper = Deduper(settings)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            m = min(batch, n - start)
            keys = rng.integers(0, 256, (m, 24), dtype=np.uint8)
            keys[::50] = keys[0]  # 2% exact duplicates
            bands = b""
            if settings.near:
                band_keys = rng.integers(1, 2**63, (m, settings.bands), dtype=np.uint64)
                band_keys[1::50] = band_keys[1]  # 2% near duplicates
                bands = band_keys.tobytes()
            deduper.decide(keys.tobytes(), [f"doc-{start + i}" for i in range(m)], bands)
            deduper.take_records()
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0  # peak growth: exact runs first
        print(f"\nindex, {'exact + near (14 x 8)' if settings.near else 'exact'}, {n:,} synthetic documents: "
              f"{n / wall:,.0f} docs/s in the writer, ~{rss / n:,.0f} bytes/doc resident (peak RSS growth "
              f"{rss / 2**20:,.0f} MiB), spilled: {deduper.index.spilled}")
        deduper.close()
    with gzip.open(SHARED / "corpus" / "en_wikitext2.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    arr = pa.array(texts)
    hasher = MinHasher()
    t0 = time.perf_counter()
    sig, _ = hasher.signatures(arr)
    hasher.band_keys(sig)
    dt = time.perf_counter() - t0
    mib = sum(len(t.encode()) for t in texts) / 2**20
    print(f"signatures (5-grams, 112 permutations) on en_wikitext2: {dt / mib * 1000:.0f} ms/MiB, "
          f"{len(texts) / dt:,.0f} docs/s per worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000, help="synthetic documents for the index timing")
    parser.add_argument("--per-file", type=int, default=400, help="originals taken from each corpus file")
    parser.add_argument("--sample", type=int, default=420, help="originals given a planted copy")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prep-dedup-quality-") as tmp:
        quality(Path(tmp), args.per_file, args.sample, args.workers)
    if args.docs:
        scale(args.docs)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
