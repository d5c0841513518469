"""Exact dedup: the first of each normalised text is kept, in input order, whatever the workers; a 64-bit
collision removes nothing; the index spills to disk and is rebuilt by --resume; settings are checked."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import GPT2, prep_cmd, shard_bytes_of, write_jsonl
from test_output_safety import interrupted

from prep.config import PipelineConfig, load_pipeline
from prep.core import dedup as dedup_module
from prep.core.dedup import Deduper, DedupSettings, MinHasher, dedup_keys
from prep.core.stage import Stage
from prep.text.features import compute_features


def planted_corpus(path: Path, n: int = 240, seed: int = 3) -> tuple[Path, list[dict]]:
    """Distinct documents with exact copies and whitespace variants of earlier ones planted among them."""
    rng = random.Random(seed)
    words = [f"w{i}x" for i in range(500)]
    docs: list[dict] = []
    for i in range(n):
        roll = rng.random()
        if docs and roll < 0.15:
            docs.append({"id": f"d{i}", "text": rng.choice(docs)["text"]})  # an exact copy
        elif docs and roll < 0.25:
            source = rng.choice(docs)["text"]
            docs.append({"id": f"d{i}", "text": "  " + source.replace(" ", " \n\t ", 3) + "\n"})  # whitespace
        else:
            docs.append({"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))})
    return write_jsonl(path, docs), docs


def oracle(docs: list[dict]) -> tuple[list[str], dict[str, str]]:
    """(ids kept, removed id -> id of the earlier document it repeats), by whitespace-normalised text."""
    first: dict[str, str] = {}
    kept, removed = [], {}
    for d in docs:
        norm = " ".join(d["text"].split())
        if norm in first:
            removed[d["id"]] = first[norm]
        else:
            first[norm] = d["id"]
            kept.append(d["id"])
    return kept, removed


def run_dedup(inp: Path, out: Path, *extra: str) -> Path:
    prep_cmd("run", "-i", inp, "-o", out, "--tokenizer", GPT2, "--no-progress", "--chunk-bytes", "2KiB",
             "--shard-bytes", "8KiB", "--features", "num_chars", "--dedup", "exact", *extra, check=True)
    return out


def test_exact_dedup_keeps_the_first_of_each_text_across_workers(tmp_path: Path) -> None:
    inp, docs = planted_corpus(tmp_path / "in.jsonl")
    kept, removed = oracle(docs)
    assert len(removed) > 30
    outs = [run_dedup(inp, tmp_path / f"w{w}", "--workers", str(w), "--router", r, "--seed", str(w), "--keep-filtered")
            for w, r in ((1, "p2c"), (2, "random"), (3, "round-robin"))]
    assert pq.read_table(outs[0], columns=["id"]).column("id").to_pylist() == kept
    assert len(list(outs[0].glob("part-*.parquet"))) >= 3
    for out in outs[1:]:
        assert shard_bytes_of(out) == shard_bytes_of(outs[0])
        assert (out / "_filtered.parquet").read_bytes() == (outs[0] / "_filtered.parquet").read_bytes()
    manifest = json.loads((outs[0] / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["filtered_by"] == {"dedup_exact": len(removed)} and counts["filtered"] == len(removed)
    assert counts["documents_out"] == len(kept)
    sizes: dict[str, int] = {}
    for first in removed.values():
        sizes[first] = sizes.get(first, 1) + 1
    hist: dict[str, int] = {}
    for size in sizes.values():
        hist[str(size)] = hist.get(str(size), 0) + 1
    assert manifest["dedup"] == {"exact_removed": len(removed), "near_removed": 0, "clusters": len(sizes),
                                 "largest_cluster": max(sizes.values()), "cluster_sizes": dict(sorted(
                                     hist.items(), key=lambda kv: int(kv[0]))),
                                 "indexed_documents": len(kept), "spilled": False}
    filtered = pq.read_table(outs[0] / "_filtered.parquet").to_pylist()
    assert {r["id"]: r["duplicate_of"] for r in filtered} == removed
    assert {(r["rule"], r["value"]) for r in filtered} == {("dedup_exact", 1.0)}
    written_tokens = sum(pq.read_table(outs[0], columns=["num_tokens"]).column("num_tokens").to_pylist())
    assert counts["tokens"] == written_tokens
    summary = prep_cmd("inspect", outs[0], check=True).stdout
    assert "dedup" in summary and "cluster sizes" in summary
    prep_cmd("report", outs[0], check=True)
    assert "cluster size (documents)" in (outs[0] / "report.html").read_text()


def test_a_tiny_memory_budget_spills_to_disk_and_decides_the_same(tmp_path: Path) -> None:
    inp, docs = planted_corpus(tmp_path / "in.jsonl")
    big = run_dedup(inp, tmp_path / "big", "--workers", "2")
    tiny = run_dedup(inp, tmp_path / "tiny", "--workers", "2", "--dedup-memory", "1KiB")
    assert shard_bytes_of(tiny) == shard_bytes_of(big)
    manifests = [json.loads((o / "_manifest.json").read_text()) for o in (big, tiny)]
    assert manifests[1]["dedup"]["spilled"] is True and manifests[0]["dedup"]["spilled"] is False
    assert {**manifests[1]["dedup"], "spilled": False} == manifests[0]["dedup"]


def test_resume_rebuilds_the_index_and_decides_as_an_uninterrupted_run(tmp_path: Path) -> None:
    inp, docs = planted_corpus(tmp_path / "in.jsonl")
    done = run_dedup(inp, tmp_path / "done", "--workers", "2", "--dedup", "exact,near")
    shards = len(list(done.glob("part-*.parquet")))
    assert shards >= 4
    cut = interrupted(done, tmp_path / "cut", keep=2)
    assert (cut / "_dedup.jsonl").exists()
    run_dedup(inp, cut, "--workers", "3", "--resume", "--dedup-memory", "1KiB", "--dedup", "exact,near")
    assert shard_bytes_of(cut) == shard_bytes_of(done)
    assert (cut / "_dedup.jsonl").read_bytes() == (done / "_dedup.jsonl").read_bytes()
    assert json.loads((cut / "_manifest.json").read_text())["dedup"]["clusters"] == \
        json.loads((done / "_manifest.json").read_text())["dedup"]["clusters"]
    # resuming with different dedup settings is refused
    again = interrupted(done, tmp_path / "again", keep=2)
    proc = prep_cmd("run", "-i", inp, "-o", again, "--tokenizer", GPT2, "--no-progress", "--chunk-bytes", "2KiB",
                    "--shard-bytes", "8KiB", "--features", "num_chars", "--resume", "--dedup", "exact")
    assert proc.returncode == 2 and "dedup_near" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_64_bit_collision_never_removes_a_distinct_document(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = pa.array(["one text", "another text", "one   text", "a third"])
    monkeypatch.setattr(dedup_module.xxhash, "xxh3_64_intdigest", lambda data: 7)  # every content_hash the same
    keys = dedup_keys(texts)
    assert len({k[:8].tobytes() for k in keys}) == 1  # the collision is there
    decision = Deduper(DedupSettings(exact=True, keep_rows=True)).decide(["a", "b", "c", "d"],
                                                                         {"dedup_keys": keys.tobytes()})
    assert decision == {"drop": [2], "counts": {"dedup_exact": 1}, "rows": [
        {"id": "c", "rule": "dedup_exact", "value": 1.0, "threshold": None, "duplicate_of": "a"}]}


def test_the_key_starts_with_content_hash() -> None:
    texts = pa.array(["Hello  world\n", " x ", "", "héllo wörld 😀"])
    features = compute_features(texts, pa.array([[]] * 4, pa.list_(pa.uint32())), ["content_hash"])
    keys = dedup_keys(texts)
    assert np.frombuffer(keys[:, :8].tobytes(), "<u8").tolist() == features["content_hash"].to_pylist()


def test_with_exact_dedup_content_hash_is_taken_from_the_key_not_computed_again(monkeypatch) -> None:
    import xxhash

    from prep.core import stage as stage_module

    asked: list[list[str]] = []
    compute = stage_module.compute_features
    monkeypatch.setattr(stage_module, "compute_features",
                        lambda t, i, names: asked.append(names) or compute(t, i, names))
    texts = ["Hello  world\n", " x ", "héllo wörld 😀", "a\tb  c"]
    batch = pa.RecordBatch.from_pydict({"id": [f"d{i}" for i in range(4)], "text": texts})
    features = ["num_chars", "content_hash", "num_words"]
    config = PipelineConfig(tokenizer=str(GPT2), backend="tokenizers", features=features, dedup_exact=True)
    out, _ = Stage(config)(batch)
    assert asked == [["num_chars", "num_words"]]  # the sharing happened
    assert out.schema.names == ["id", "input_ids", "num_tokens", *features]  # in the asked order
    assert out.column("content_hash").to_pylist() == [xxhash.xxh3_64_intdigest(" ".join(t.split()).encode())
                                                      for t in texts]


def test_spill_path_in_process_decides_as_in_memory() -> None:
    rng = random.Random(1)
    texts = pa.array([f"t{rng.randint(0, 300)}" for _ in range(2000)])
    ids = [str(i) for i in range(2000)]
    keys = dedup_keys(texts).tobytes()
    hasher = MinHasher()
    sigs, _ = hasher.signatures(texts)
    bands = hasher.band_keys(sigs).tobytes()
    settings = DedupSettings(exact=True, near=True, keep_rows=True)
    memory, disk = Deduper(settings), Deduper(DedupSettings(**{**settings.__dict__, "memory": 4096}))
    results = []
    for deduper in (memory, disk):  # in batches of 100: the later ones look up what the earlier ones spilled
        drops = []
        for i in range(0, 2000, 100):
            decision = deduper.decide(ids[i:i + 100], {"dedup_keys": keys[i * 24:(i + 100) * 24],
                                                       "dedup_bands": bands[i * 112:(i + 100) * 112]})
            drops += [(i + j, row) for j, row in zip(decision["drop"], decision["rows"], strict=True)]
        results.append(drops)
    assert results[0] == results[1]
    assert 2000 - len(results[0]) == len(set(texts.to_pylist()))
    assert disk.index.spilled and disk.bands.spilled and not memory.index.spilled and not memory.bands.spilled


def test_dedup_off_computes_and_writes_nothing(tmp_path: Path) -> None:
    stage = Stage(PipelineConfig(tokenizer=str(GPT2), backend="tokenizers", features=["num_chars"]))
    _, stats = stage(pa.record_batch({"id": ["a", "b"], "text": ["same", "same"]}))
    assert stats.dedup_keys == b"" and stats.documents == 2
    inp, _ = planted_corpus(tmp_path / "in.jsonl", n=30)
    out = tmp_path / "out"
    prep_cmd("run", "-i", inp, "-o", out, "--tokenizer", GPT2, "--no-progress", "--workers", "1", check=True)
    assert "dedup" not in json.loads((out / "_manifest.json").read_text())
    assert not (out / "_dedup.jsonl").exists()


@pytest.mark.parametrize(("toml", "flags", "message"), [
    ("", ["--dedup", "fuzzy"], "bad --dedup 'fuzzy': use exact, near, exact,near or off"),
    ("[dedup]\nexact = 'yes'\n", [], "[dedup] exact must be true or false"),
    ("[dedup]\nmemory = 'lots'\n", [], "bad dedup_memory 'lots'"),
    ("[dedup]\nexcat = true\n", [], "unknown key 'excat' in [dedup]"),
    ("[dedup]\nnear = true\nnum_perm = 64\n", [], "[dedup] num_perm 64 is fewer than bands x rows = 112"),
    ("[dedup]\nbands = 0\n", [], "[dedup] bands must be a whole number of at least 1, not 0"),
    ("[dedup]\nthreshold = 1.5\n", [], "[dedup] threshold must be a number in (0, 1], not 1.5"),
])
def test_bad_dedup_settings_are_one_line_user_errors(tmp_path: Path, toml: str, flags: list[str],
                                                     message: str) -> None:
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(toml)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "x"}])
    proc = prep_cmd("run", pipeline, "-i", inp, "-o", tmp_path / "out", "--tokenizer", GPT2, *flags)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ray_engine_dedups_the_same_and_resumes(tmp_path: Path) -> None:
    inp, docs = planted_corpus(tmp_path / "in.jsonl")
    local = run_dedup(inp, tmp_path / "local", "--workers", "2", "--keep-filtered", "--dedup", "exact,near")
    ray = run_dedup(inp, tmp_path / "ray", "--workers", "2", "--keep-filtered", "--engine", "ray", "--dedup",
                    "exact,near")
    assert shard_bytes_of(ray) == shard_bytes_of(local)
    for name in ("_filtered.parquet", "_dedup.jsonl"):
        assert (ray / name).read_bytes() == (local / name).read_bytes()
    manifests = [json.loads((o / "_manifest.json").read_text()) for o in (local, ray)]
    assert manifests[0]["counts"] == manifests[1]["counts"] and manifests[0]["dedup"] == manifests[1]["dedup"]
    plain = run_dedup(inp, tmp_path / "plain", "--workers", "1", "--dedup", "exact,near")  # resumed by Ray
    cut = interrupted(plain, tmp_path / "cut", keep=2)
    run_dedup(inp, cut, "--workers", "3", "--engine", "ray", "--resume", "--dedup", "exact,near")
    assert shard_bytes_of(cut) == shard_bytes_of(local)
    assert (cut / "_dedup.jsonl").read_bytes() == (plain / "_dedup.jsonl").read_bytes()


def near_corpus(path: Path, seed: int = 5) -> tuple[Path, list[dict], set[str]]:
    """Distinct 150-word documents, with planted variants of earlier ones: case changed (a near duplicate),
    1% of words changed (near), 20% changed (not a duplicate). Returns the ids a near dedup must remove."""
    rng = random.Random(seed)
    vocab = [f"v{i}q" for i in range(20000)]
    docs: list[dict] = []
    planted: set[str] = set()
    for i in range(160):
        roll = rng.random()
        originals = [d for d in docs if d["id"].startswith("o")]
        if originals and roll < 0.3:
            words = rng.choice(originals)["text"].split()
            kind = rng.choice(["case", "one", "twenty"])
            if kind == "case":
                text = " ".join(w.upper() if j % 3 == 0 else w for j, w in enumerate(words))
            else:
                frac = 0.01 if kind == "one" else 0.2
                changed = rng.sample(range(len(words)), max(1, int(frac * len(words))))
                for j in changed:
                    words[j] = f"new{rng.randrange(10**9)}"
                text = " ".join(words)
            docs.append({"id": f"{kind}{i}", "text": text})
            if kind != "twenty":
                planted.add(f"{kind}{i}")
        else:
            docs.append({"id": f"o{i}", "text": " ".join(rng.choice(vocab) for _ in range(150))})
    return write_jsonl(path, docs), docs, planted


def test_near_dedup_removes_the_planted_near_copies_across_workers(tmp_path: Path) -> None:
    inp, docs, planted = near_corpus(tmp_path / "in.jsonl")
    assert len(planted) >= 20 and any(d["id"].startswith("twenty") for d in docs)
    outs = [run_dedup(inp, tmp_path / f"w{w}", "--workers", str(w), "--dedup", "near", "--keep-filtered")
            for w in (1, 3)]
    assert pq.read_table(outs[0], columns=["id"]).column("id").to_pylist() == \
        [d["id"] for d in docs if d["id"] not in planted]
    assert shard_bytes_of(outs[0]) == shard_bytes_of(outs[1])
    assert (outs[0] / "_filtered.parquet").read_bytes() == (outs[1] / "_filtered.parquet").read_bytes()
    manifest = json.loads((outs[0] / "_manifest.json").read_text())
    assert manifest["dedup"]["near_removed"] == len(planted) == manifest["counts"]["filtered_by"]["dedup_near"]
    rows = pq.read_table(outs[0] / "_filtered.parquet").to_pylist()
    assert all(r["duplicate_of"].startswith("o") and r["value"] > 0.7 for r in rows)
    # with a threshold above the 1%-changed copies' similarity, only the case variants (similarity 1) go
    strict = run_dedup(inp, tmp_path / "strict", "--workers", "2", "--dedup", "near",
                       "--dedup-threshold", "1.0")
    assert set(pq.read_table(strict, columns=["id"]).column("id").to_pylist()) == \
        {d["id"] for d in docs if not d["id"].startswith("case")}


def test_minhash_estimates_match_exact_jaccard() -> None:
    rng = random.Random(2)
    vocab = [f"w{i}" for i in range(3000)]
    hasher = MinHasher(num_perm=256, bands=14, rows=8)
    errors = []
    for frac in (0.01, 0.05, 0.1, 0.2, 0.4):
        for _ in range(8):
            a = [rng.choice(vocab) for _ in range(300)]
            b = [w if rng.random() > frac else rng.choice(vocab) + "x" for w in a]
            sig, has = hasher.signatures(pa.array([" ".join(a), " ".join(b)]))
            grams = [{tuple(x[i:i + 5]) for i in range(len(x) - 4)} for x in (a, b)]
            exact = len(grams[0] & grams[1]) / len(grams[0] | grams[1])
            errors.append(float(np.mean(sig[0] == sig[1])) - exact)
    assert abs(np.mean(errors)) < 0.02 and max(map(abs, errors)) < 0.12  # unbiased; sd ~ 0.03 at 256


def test_shingles_are_the_words_of_str_split_whatever_the_surrounding_whitespace() -> None:
    """Arrow's whitespace split gives an empty word for leading and trailing whitespace: not a shingle."""
    texts = ["\n  Alpha beta\tgamma delta epsilon zeta \n", "alpha beta gamma delta epsilon zeta", "  \n ", ""]
    shingle, spans = MinHasher().shingles(pa.array(texts))
    expected = [max(len(t.split()) - 4, 1) if t.split() else 0 for t in texts]
    assert spans.tolist() == expected == [2, 2, 0, 0]
    sets = dedup_module.shingle_sets(shingle, spans)
    assert sets[0] == sets[1] and sets[2] == sets[3] == b""


def test_the_threshold_is_checked_on_the_exact_jaccard_of_the_shingles() -> None:
    """Variants of originals with 2 to 10 of 200 words changed (5-gram Jaccard ~0.9 down to ~0.6), decided in
    batches with a budget that spills: a variant goes exactly when the Jaccard of its word 5-grams with its
    original, computed here from the words, reaches 0.8, and the similarity reported is that Jaccard. Without
    the threshold some variants below 0.8 go too: the check had candidates to turn down."""
    rng = random.Random(8)
    vocab = [f"t{i}k" for i in range(5000)]
    docs = []
    for o in range(30):
        words = [rng.choice(vocab) for _ in range(200)]
        docs.append((f"o{o}", words, None))
        for changed in (2, 4, 6, 8, 10):
            variant = list(words)
            for j in rng.sample(range(200), changed):
                variant[j] = f"new{rng.randrange(10**9)}"
            docs.append((f"v{o}-{changed}", [w.upper() if j % 7 == 0 else w for j, w in enumerate(variant)], o))

    def grams(words: list[str]) -> set[tuple[str, ...]]:
        lower = [w.lower() for w in words]
        return {tuple(lower[i:i + 5]) for i in range(len(lower) - 4)}

    by_id = {doc_id: grams(words) for doc_id, words, _ in docs}

    def jaccard(a: str, b: str) -> float:
        return len(by_id[a] & by_id[b]) / len(by_id[a] | by_id[b])

    exact = {doc_id: jaccard(doc_id, f"o{o}") for doc_id, _, o in docs if o is not None}
    assert min(exact.values()) < 0.7 and max(exact.values()) > 0.9
    texts = pa.array([" ".join(words) for _, words, _ in docs])
    hasher = MinHasher()
    shingle, spans = hasher.shingles(texts)
    sig, has = hasher.minhash(shingle, spans)
    bands, sets = hasher.band_keys(sig), dedup_module.shingle_sets(shingle, spans)
    removed = []
    for threshold in (0.8, None):
        deduper = Deduper(DedupSettings(near=True, threshold=threshold, keep_rows=True, memory=2048))
        rows = []
        for start in range(0, len(docs), 45):
            stop = start + 45
            rows += deduper.decide([d[0] for d in docs[start:stop]], {
                "dedup_bands": bands[start:stop].tobytes(), "dedup_shingles": dedup_module.pack_sets(sets[start:stop])
            })["rows"]
        removed.append({r["id"]: r for r in rows})
        if threshold is not None:
            assert deduper.index.spilled
    with_threshold, without = removed
    for doc_id, row in with_threshold.items():  # each removal: the Jaccard of its shingles, at least 0.8
        assert row["value"] == pytest.approx(jaccard(doc_id, row["duplicate_of"]), abs=1e-12)
        assert row["value"] >= 0.8 and row["threshold"] == 0.8
    original_found = {i for i, row in without.items() if row["duplicate_of"] == f"o{i[1:].split('-')[0]}"}
    assert {i for i in original_found if exact[i] >= 0.8} <= set(with_threshold)
    assert {i for i, j in exact.items() if j >= 0.9} <= set(with_threshold)  # LSH misses ~1e-4 at 0.9
    assert {i for i in original_found if exact[i] < 0.8}  # candidates below the threshold, turned down above


def test_the_dedup_pipeline_file_loads() -> None:
    config = load_pipeline(Path(__file__).resolve().parent.parent / "pipelines" / "pretrain-dedup.toml")
    assert (config.dedup_exact, config.dedup_near, config.dedup_bands, config.dedup_rows) == (True, True, 14, 8)
    assert config.dedup_memory == 2 * 2**30 and "dedup_memory" not in config.output_fingerprint()
    assert config.output_fingerprint()["dedup_near"] is True
