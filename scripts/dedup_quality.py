"""Dedup quality on real text, and its costs at scale.

    .venv/bin/python scripts/dedup_quality.py quality [--per-file 400] [--sample 420]
    .venv/bin/python scripts/dedup_quality.py scale --docs 1000000 10000000
    .venv/bin/python scripts/dedup_quality.py costs [--repeats 2]

quality: builds a corpus from ../shared/corpus (English files) with planted duplicates of sampled originals:
exact copies, whitespace variants, case variants, copies with 1%, 5% and 20% of words changed, paragraphs
shuffled. Runs `prep run --dedup exact`, `exact,near` and `exact,near --dedup-threshold 0.8` on it and
reports, per planted kind, the share removed, and precision / recall against the planted truth (exact: copies
and whitespace variants; near: also case, 1%, 5% and shuffled). Then, over all pairs of the corpus, the exact
Jaccard similarity of their word 5-grams (computed here, from the words, with a sparse product) is the truth
(>= 0.8): precision / recall of the LSH candidate pairs (sharing a band), of those that pass the threshold,
and of the documents each run removes (truth: the document has an earlier one at Jaccard >= 0.8).

scale: the writer-side index (prep.core.dedup.Deduper, the default 2 GiB budget) on N synthetic documents,
each N in a fresh process: documents per second, resident and on-disk bytes per document.

costs: on the whole shared corpus (real text): the workers' ms per MiB for exact keys and near signatures,
the index's ms per MiB and documents per second deciding them; then `prep run` over the corpus with dedup
off, exact and exact,near (interleaved, `--repeats` times): MB/s, the cost of each, and what exact,near
removes per file.
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


def prep_run(inp: Path, out: Path, workers: int, *flags: str) -> dict:
    """The real command line; returns the manifest."""
    subprocess.run([sys.executable, "-m", "prep", "run", "-i", str(inp), "-o", str(out), "--tokenizer",
                    str(SHARED / "tokenizers" / "gpt2.tokenizer.json"), "--workers", str(workers), "--no-progress",
                    "--overwrite", *flags], check=True, capture_output=True, cwd=ROOT)
    return json.loads((out / "_manifest.json").read_text())


def removed_by(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out / "_filtered.parquet").to_pylist() if r["rule"].startswith("dedup")}


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
    runs = {}
    for method, flags, truth in (("exact", ("exact",), EXACT_TRUTH), ("exact,near", ("exact,near",), NEAR_TRUTH),
                                 ("exact,near, threshold 0.8", ("exact,near", "--dedup-threshold", "0.8"), NEAR_TRUTH)):
        out = work / f"run{len(runs)}"
        t0 = time.perf_counter()
        prep_run(path, out, workers, "--keep-filtered", "--dedup", *flags)
        wall = time.perf_counter() - t0
        removed = runs[method] = removed_by(out)
        should = {p["id"] for p in planted if p["kind"] in truth}
        hit = should & set(removed)
        print(f"\n--dedup {method}: removed {len(removed)} in {wall:.1f} s; precision "
              f"{len(hit) / max(1, len(removed)):.3f}, recall {len(hit) / max(1, len(should)):.3f} (planted truth)")
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
    against_jaccard(corpus, runs)


def exact_jaccard_pairs(corpus: list[dict]) -> dict[tuple[int, int], float]:
    """Every pair (i < j) of documents sharing a word 5-gram, with the exact Jaccard similarity of their 5-gram
    sets: tuples of lower-cased words, numbered, one sparse matrix product for all intersections."""
    from scipy import sparse

    vocab: dict[tuple, int] = {}
    rows, cols = [], []
    for i, d in enumerate(corpus):
        for gram in shingles(d["text"]):
            rows.append(i)
            cols.append(vocab.setdefault(gram, len(vocab)))
    m = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(corpus), len(vocab)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = sparse.triu(m @ m.T, k=1).tocoo()
    sims = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    return {(int(i), int(j)): float(s) for i, j, s in zip(inter.row, inter.col, sims, strict=True)}


def lsh_pairs(corpus: list[dict]) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(pairs sharing a band of prep's 14 x 8 LSH, those of them whose shingle sets pass a 0.8 threshold)."""
    from prep.core.dedup import MinHasher, shingle_sets
    from prep.core.dedup import jaccard as set_jaccard

    hasher = MinHasher()
    shingle, spans = hasher.shingles(pa.array([d["text"] for d in corpus]))
    sig, has = hasher.minhash(shingle, spans)
    bands, sets = hasher.band_keys(sig), shingle_sets(shingle, spans)
    pairs: set[tuple[int, int]] = set()
    for band in range(bands.shape[1]):
        groups: dict[int, list[int]] = {}
        for i in np.flatnonzero(has):
            groups.setdefault(int(bands[i, band]), []).append(int(i))
        for members in groups.values():
            pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    return pairs, {(a, b) for a, b in pairs if set_jaccard(sets[a], sets[b]) >= 0.8}


def against_jaccard(corpus: list[dict], runs: dict[str, dict[str, dict]]) -> None:
    """Precision and recall against exact Jaccard >= 0.8 over all pairs of the corpus: of the LSH candidate pairs,
    of those passing the threshold, and of the documents each run removes."""
    t0 = time.perf_counter()
    sims = exact_jaccard_pairs(corpus)
    truth = {p for p, s in sims.items() if s >= 0.8}
    n = len(corpus)
    print(f"\nagainst exact Jaccard >= 0.8 over all {n * (n - 1) // 2:,} pairs of the {n:,} documents "
          f"({len(sims):,} share a 5-gram, {len(truth):,} reach 0.8; {time.perf_counter() - t0:.0f} s):")
    print(f"  {'pairs':<44} {'predicted':>9} {'true':>6} {'precision':>9} {'recall':>7}")
    for name, predicted in zip(("sharing a band (14 x 8 LSH candidates)", "  and shingle Jaccard >= 0.8 (threshold)"),
                               lsh_pairs(corpus), strict=True):
        hit = len(predicted & truth)
        print(f"  {name:<44} {len(predicted):>9,} {hit:>6,} {hit / max(1, len(predicted)):>9.3f} "
              f"{hit / max(1, len(truth)):>7.3f}")
    position = {d["id"]: i for i, d in enumerate(corpus)}
    has_earlier = {j for _, j in truth}  # documents with an earlier one at Jaccard >= 0.8
    print(f"  {'documents removed (truth: an earlier one >= 0.8)':<44} {'removed':>9} {'true':>6} {'precision':>9} "
          f"{'recall':>7}")
    for method, removed in runs.items():
        if method == "exact":
            continue
        ids = {position[i] for i in removed}
        hit = len(ids & has_earlier)
        print(f"  --dedup {method:<36} {len(ids):>9,} {hit:>6,} {hit / max(1, len(ids)):>9.3f} "
              f"{hit / max(1, len(has_earlier)):>7.3f}")


def scale_one(n: int, near: bool) -> None:
    """Decide n synthetic documents (2% exact, 2% near duplicates) in batches of 10,000 with the default budget;
    print a JSON line: documents per second, resident and on-disk bytes per document."""
    from prep.core.dedup import Deduper, DedupSettings

    settings = DedupSettings(exact=True, near=near)
    rng = np.random.default_rng(0)
    batch = 10_000
    rss0 = _rss()
    deduper = Deduper(settings)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        m = min(batch, n - start)
        stats = {"dedup_keys": rng.integers(0, 256, (m, 24), dtype=np.uint8)}
        stats["dedup_keys"][::50] = stats["dedup_keys"][0]
        stats["dedup_keys"] = stats["dedup_keys"].tobytes()
        if near:
            band_keys = rng.integers(1, 2**63, (m, settings.bands), dtype=np.uint64)
            band_keys[1::50, 3] = band_keys[1, 3]  # share one band with the batch's second document
            stats["dedup_bands"] = band_keys.tobytes()
        deduper.decide([f"doc-{start + i}" for i in range(m)], stats)
        deduper.take_records()
    wall = time.perf_counter() - t0
    disk = sum(f.stat().st_size for d in _spill_dirs(deduper) for f in Path(d).rglob("*") if f.is_file())
    print(json.dumps({"docs": n, "near": near, "docs_per_s": round(n / wall), "wall_s": round(wall, 1),
                      "resident_bytes_per_doc": round((_rss() - rss0) / n), "disk_bytes_per_doc": round(disk / n),
                      "kept": deduper.kept, "spilled_exact": deduper.index.spilled,
                      "spilled_bands": bool(deduper.bands and deduper.bands.spilled)}))


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _spill_dirs(deduper) -> list[str]:
    dirs = [d.name for d in (deduper.index._spill_dir, deduper.bands and deduper.bands._dir) if d]
    return dirs


def scale(sizes: list[int]) -> None:
    for n in sizes:
        for near in (False, True):
            proc = subprocess.run([sys.executable, __file__, "scale-one", str(n), str(int(near))], check=True,
                                  capture_output=True, text=True, cwd=ROOT)
            r = json.loads(proc.stdout.splitlines()[-1])
            print(f"index, {'exact + near (14 x 8)' if near else 'exact':<22} {n:>12,} synthetic documents: "
                  f"{r['docs_per_s']:>9,} docs/s ({r['wall_s']:,} s), {r['resident_bytes_per_doc']:>5,} bytes/doc "
                  f"resident + {r['disk_bytes_per_doc']:>4,} on disk; spilled: exact {r['spilled_exact']}, "
                  f"bands {r['spilled_bands']}", flush=True)


def corpus_texts() -> tuple[pa.Array, list[str]]:
    texts, files = [], []
    for path in sorted((SHARED / "corpus").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                texts.append(json.loads(line).get("text") or "")
                files.append(path.name.removesuffix(".jsonl.gz"))
    return pa.array(texts), files


def costs(workers: int, repeats: int) -> None:
    from prep.core.dedup import Deduper, DedupSettings, MinHasher, dedup_keys

    texts, _ = corpus_texts()
    mib = sum(len(t.encode()) for t in texts.to_pylist()) / 2**20
    hasher = MinHasher()
    step = 2000  # a worker's batch
    timings = {"exact keys": 0.0, "near signatures + bands": 0.0}
    parts = []
    for start in range(0, len(texts), step):
        part = texts.slice(start, step)
        t0 = time.perf_counter()
        keys = dedup_keys(part)
        t1 = time.perf_counter()
        sig, has = hasher.signatures(part)
        bands = hasher.band_keys(sig)
        bands[~has] = 0
        t2 = time.perf_counter()
        timings["exact keys"] += t1 - t0
        timings["near signatures + bands"] += t2 - t1
        parts.append((keys.tobytes(), bands.tobytes(), [str(start + i) for i in range(len(part))]))
    print(f"whole shared corpus: {len(texts):,} documents, {mib:,.0f} MiB of text; per worker (one thread):")
    for name, seconds in timings.items():
        print(f"  {name:<24} {seconds / mib * 1000:>6.0f} ms/MiB")
    for settings in (DedupSettings(exact=True), DedupSettings(exact=True, near=True)):
        deduper = Deduper(settings)
        t0 = time.perf_counter()
        removed = 0
        for keys, bands, ids in parts:
            removed += len(deduper.decide(ids, {"dedup_keys": keys, "dedup_bands": bands if settings.near else b""})
                           ["drop"])
        seconds = time.perf_counter() - t0
        print(f"  index, {'exact + near' if settings.near else 'exact':<16} {seconds / mib * 1000:>6.0f} ms/MiB, "
              f"{len(texts) / seconds:>9,.0f} docs/s ({removed:,} removed)")
    run_costs(workers, repeats)


def run_costs(workers: int, repeats: int) -> None:
    """`prep run` over the whole corpus, dedup off / exact / exact,near interleaved; what exact,near removes."""
    rates: dict[str, list[float]] = {"off": [], "exact": [], "exact,near": []}
    with tempfile.TemporaryDirectory(prefix="prep-dedup-costs-") as tmp:
        for _ in range(repeats):
            for method in rates:
                out = Path(tmp) / method.replace(",", "_")
                flags = {"off": (), "exact": ("--dedup", "exact"),  # only the last writes the audit it reads
                         "exact,near": ("--dedup", "exact,near", "--keep-filtered")}[method]
                manifest = prep_run(SHARED / "corpus", out, workers, *flags)
                rates[method].append(manifest["counts"]["bytes_in"] / 1e6 / manifest["timings"]["wall_s"])
        print(f"\nprep run over ../shared/corpus, --workers {workers}, MB/s of text (each run):")
        off = np.median(rates["off"])
        for method, values in rates.items():
            cost = "" if method == "off" else f", throughput {np.median(values) / off - 1:+.0%} against off (medians)"
            print(f"  {method:<11} {', '.join(f'{v:.2f}' for v in values)}{cost}")
        manifest = json.loads((Path(tmp) / "exact_near" / "_manifest.json").read_text())
        removed = removed_by(Path(tmp) / "exact_near")
        per_file: dict[str, list[int]] = {}
        for doc_id, row in removed.items():
            counts = per_file.setdefault(doc_id.split("/")[0], [0, 0])
            counts[row["rule"] == "dedup_near"] += 1
        dedup = manifest["dedup"]
        print(f"exact,near removes {dedup['exact_removed']:,} exact and {dedup['near_removed']:,} near duplicates "
              f"({dedup['clusters']:,} clusters, largest {dedup['largest_cluster']:,}); exact / near per file:")
        for name, (exact, near) in sorted(per_file.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {name:<24} {exact:>5,} / {near:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--per-file", type=int, default=400, help="originals taken from each corpus file")
    q.add_argument("--sample", type=int, default=420, help="originals given a planted copy")
    q.add_argument("--workers", type=int, default=2)
    s = sub.add_parser("scale")
    s.add_argument("--docs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    one = sub.add_parser("scale-one")
    one.add_argument("n", type=int)
    one.add_argument("near", type=int)
    c = sub.add_parser("costs")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.command == "quality":
        with tempfile.TemporaryDirectory(prefix="prep-dedup-quality-") as tmp:
            quality(Path(tmp), args.per_file, args.sample, args.workers)
    elif args.command == "scale":
        scale(args.docs)
    elif args.command == "scale-one":
        scale_one(args.n, bool(args.near))
    else:
        costs(args.workers, args.repeats)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
