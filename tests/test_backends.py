"""Every backend prep can pick, in whichever `tokenizers` API this environment has (0.2x in .venv, 1.x in
.venv-fast, see `make test`), gives the reference ids of ../shared/reference/ (built with 0.23.3 and 1.0.0rc3).

The oracle is the reference files: per document a token count and sha256 of the ids as little-endian uint32.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import BERT_ZH, CORPUS, GPT2, QWEN2, SAMPLE, SAMPLE_TOKENIZER, SHARED, prep_cmd

from prep.errors import UserError
from prep.text.hf import tokenizers_major
from prep.text.tokenizer import Backend, choose_backend, describe_tokenizer, eos_id, load_backend

REFERENCE = SHARED / "reference"
TOKENIZERS = {"gpt2": GPT2, "qwen2": QWEN2, "bert-base-chinese": BERT_ZH}
MAJOR = tokenizers_major()
# What prep can pick per tokenizer here: 0.2x converts byte-level BPEs to tiktoken (WordPiece declines);
# 1.x is the reference itself and the fastest, and tiktoken's converter needs the 0.2x API.
PICKABLE = (
    {"gpt2": ["tiktoken", "tokenizers"], "qwen2": ["tiktoken", "tokenizers"], "bert-base-chinese": ["tokenizers"]}
    if MAJOR == 0
    else {name: ["tokenizers-1"] for name in TOKENIZERS}
)
AUTO = {name: backends[0] for name, backends in PICKABLE.items()}
# From ../shared/tokenizers/README.md and sample_data/README.md, not from the code under test.
KNOWN = {GPT2: (50257, "<|endoftext|>", 50256), QWEN2: (151646, "<|endoftext|>", 151643),
         BERT_ZH: (21128, "[SEP]", 102), SAMPLE_TOKENIZER: (4096, "<|endoftext|>", 0)}


def _digest(ids: np.ndarray) -> str:
    return hashlib.sha256(ids.astype("<u4").tobytes()).hexdigest()[:16]


@functools.cache
def _reference(name: str) -> dict[tuple[str, int], tuple[int, str]]:
    """(file, 1-based line) -> (num_tokens, digest)."""
    with gzip.open(REFERENCE / f"{name}.ids.tsv.gz", "rt", encoding="utf-8") as f:
        rows = (line.rstrip("\n").split("\t") for line in f if not line.startswith("#"))
        return {(file, int(line)): (int(count), digest) for file, line, count, digest in rows}


@functools.cache
def _backend(tokenizer: str, name: str) -> Backend:
    """One backend per process, as a worker has."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    return load_backend(tokenizer, name)


def _encode_file(args: tuple[str, str, str, int | None]) -> list[tuple[int, int, str]]:
    """(line, num_tokens, digest) of one corpus file's documents, through the Backend API: all of them, or
    (sample) the first `sample` documents of at most 20,000 characters among the first 100."""
    tokenizer, backend_name, file, sample = args
    backend = _backend(tokenizer, backend_name)
    with gzip.open(CORPUS / file, "rt", encoding="utf-8") as f:
        if sample is None:
            docs = [(line, json.loads(text)["text"]) for line, text in enumerate(f, start=1)]
        else:  # of the first 100 lines
            docs = [(line, json.loads(text)["text"]) for line, text in enumerate(itertools.islice(f, 100), start=1)]
            docs = [(line, text) for line, text in docs if len(text) <= 20_000][:sample]
    rows = []
    for start in range(0, len(docs), 1000):
        batch = docs[start : start + 1000]
        ids, offsets = backend.encode_batch([text for _, text in batch])
        assert ids.dtype == np.uint32 and offsets[-1] == len(ids)
        for (line, _), (a, b) in zip(batch, itertools.pairwise(offsets.tolist()), strict=True):
            rows.append((line, b - a, _digest(ids[a:b])))
    return rows


def _differing(name: str, backend_name: str, sample: int | None, processes: int = 1) -> tuple[int, int, list]:
    """(documents compared, documents differing, first few differences) over the corpus."""
    reference = _reference(name)
    files = sorted(p.name for p in CORPUS.glob("*.jsonl.gz"))
    jobs = [(str(TOKENIZERS[name]), backend_name, file, sample) for file in files]
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            results = list(pool.map(_encode_file, jobs))
    else:
        results = list(map(_encode_file, jobs))
    compared, bad = 0, []
    for file, rows in zip(files, results, strict=True):
        for line, count, digest in rows:
            compared += 1
            if reference[file, line] != (count, digest):
                bad.append((file, line, reference[file, line], (count, digest)))
    return compared, len(bad), bad[:3]


def _sample_texts(limit: int = 200) -> list[str]:
    with gzip.open(CORPUS / "en_python_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in itertools.islice(f, limit)]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_auto_picks_the_fastest_exact_backend(name: str) -> None:
    info = choose_backend(describe_tokenizer(TOKENIZERS[name]), "auto", _sample_texts())
    assert info.backend == AUTO[name], info.backend_reason
    if name == "bert-base-chinese" and MAJOR == 0:
        assert "WordPiece" in info.backend_reason  # the tiktoken path declines, with the reason


@pytest.mark.parametrize(("name", "backend"), [(n, b) for n, bs in PICKABLE.items() for b in bs])
def test_backends_match_the_reference_on_a_sample(name: str, backend: str) -> None:
    """15 documents of every corpus file (the slow test below does all of them)."""
    compared, differing, first = _differing(name, backend, sample=15)
    assert compared > 300 and differing == 0, first  # a few files have fewer short documents


def test_explicit_backend_requests() -> None:
    info = describe_tokenizer(GPT2)
    assert choose_backend(info, "tokenizers", []).backend == ("tokenizers" if MAJOR == 0 else "tokenizers-1")
    if MAJOR == 0:
        with pytest.raises(UserError, match=r"tokenizers-1 needs tokenizers 1\.x: pip install 'prep\[fast\]'"):
            choose_backend(info, "tokenizers-1", [])
        assert choose_backend(info, "tiktoken", _sample_texts()).backend == "tiktoken"
    else:
        assert choose_backend(info, "tokenizers-1", []).backend == "tokenizers-1"
        with pytest.raises(UserError, match="tiktoken needs the tokenizers 0.2x API"):
            choose_backend(info, "tiktoken", [])
    with pytest.raises(UserError, match="unknown backend 'fast'"):
        choose_backend(info, "fast", [])


@pytest.mark.parametrize("path", KNOWN, ids=lambda p: p.name)
def test_vocab_size_and_eos_id(path: Path) -> None:
    """Read from the JSON in both APIs (1.x has no get_vocab_size or token_to_id)."""
    vocab_size, eos, eos_value = KNOWN[path]
    assert describe_tokenizer(path).vocab_size == vocab_size
    assert eos_id(path, eos) == eos_value
    with pytest.raises(UserError, match="has no token '<nope>'"):
        eos_id(path, "<nope>")


@pytest.mark.parametrize("backend", PICKABLE["gpt2"])
def test_truncation_and_padding_in_the_tokenizer_file_are_ignored(tmp_path: Path, backend: str) -> None:
    """A tokenizer.json that truncates to 8 ids and pads to 64 (as files saved for training often do) still gives a
    document's whole ids, with no padding: those of the same tokenizer without them, by a direct tokenizers call."""
    from tokenizers import Tokenizer

    spec = json.loads(GPT2.read_text(encoding="utf-8"))
    spec["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 50256,
                       "pad_type_id": 0, "pad_token": "<|endoftext|>"}
    path = tmp_path / "gpt2-truncating.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    texts = ["A sentence long enough to be cut after eight of its tokens, had truncation been left on.", "Short."]
    configured = [Tokenizer.from_file(str(path)).encode(t) for t in texts]  # the file does both
    assert [(len(e.ids), sum(e.attention_mask)) for e in configured] == [(64, 8), (64, 2)]
    expected = [Tokenizer.from_file(str(GPT2)).encode(t).ids for t in texts]
    ids, offsets = load_backend(path, backend).encode_batch(texts)
    assert [ids[a:b].tolist() for a, b in itertools.pairwise(offsets.tolist())] == expected
    assert len(expected[0]) > 8


def test_a_bad_tokenizer_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match=r"^cannot read tokenizer .*bad\.json: \S"):
        describe_tokenizer(bad)


def test_a_tokenizer_file_is_loaded_to_check_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinator's check that the file loads is kept in prep's cache by the file's sha256 and the tokenizers
    version: the next run does not load it again (its workers do), but another file is checked."""
    import prep.text.tokenizer as tokenizer_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loads = []
    real = tokenizer_module.load_hf_tokenizer
    monkeypatch.setattr(tokenizer_module, "load_hf_tokenizer", lambda path: loads.append(Path(path)) or real(path))
    copy = tmp_path / "copy.json"
    copy.write_bytes(GPT2.read_bytes())
    first = describe_tokenizer(GPT2)
    assert describe_tokenizer(GPT2) == first
    assert describe_tokenizer(copy).sha256 == first.sha256  # the same bytes elsewhere: known too
    assert loads == [GPT2]
    assert len(list((tmp_path / "cache" / "prep" / "tokenizers-that-load").iterdir())) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    for _ in range(2):  # a file that does not load is never taken as known
        with pytest.raises(UserError, match="cannot read tokenizer"):
            describe_tokenizer(bad)
    assert loads == [GPT2, bad, bad]


def test_a_tokenizer_file_is_parsed_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its vocabulary size, id space and end-of-text id come from one parse of the JSON (a large one takes a
    good part of a second), made again when the file changes."""
    import prep.text.tokenizer as tokenizer_module
    from prep.io.trainer_formats import tokenizer_id_space

    path = tmp_path / "tok.json"
    data = json.loads(GPT2.read_bytes())
    path.write_text(json.dumps(data), encoding="utf-8")
    parses = []
    real = tokenizer_module.json.loads
    monkeypatch.setattr(tokenizer_module.json, "loads", lambda raw: parses.append(1) or real(raw))
    assert describe_tokenizer(path).vocab_size == 50257
    assert tokenizer_id_space(str(path)) == 50257 and eos_id(path, "<|endoftext|>") == 50256
    assert len(parses) == 1
    data["added_tokens"].append({"id": 50257, "content": "<|pad|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    path.write_text(json.dumps(data), encoding="utf-8")
    assert tokenizer_id_space(str(path)) == 50258 and len(parses) == 2


def test_run_records_the_backend_and_writes_reference_ids(tmp_path: Path) -> None:
    """The whole command: the manifest names the backend, and the ids are the reference's."""
    out = tmp_path / "out"
    proc = prep_cmd("run", "--input", CORPUS / "en_common_licenses.jsonl.gz", "--output", out, "--tokenizer", GPT2,
                    "--workers", "2", "--no-progress", "--no-append-eos")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["tokenizer"]["backend"] == AUTO["gpt2"]
    assert f"backend {AUTO['gpt2']}" in proc.stderr
    reference = _reference("gpt2")
    rows = pq.read_table(out, columns=["id", "input_ids"]).to_pylist()
    assert len(rows) == sum(1 for file, _ in reference if file == "en_common_licenses.jsonl.gz")
    with gzip.open(CORPUS / "en_common_licenses.jsonl.gz", "rt", encoding="utf-8") as f:
        line_of = {json.loads(line)["id"]: i for i, line in enumerate(f, start=1)}
    for row in rows:
        ids = np.array(row["input_ids"], dtype=np.uint32)
        assert reference["en_common_licenses.jsonl.gz", line_of[row["id"]]] == (len(ids), _digest(ids))


def test_train_tokenizer_needs_the_stable_api(tmp_path: Path) -> None:
    """Under 1.x (no trainers) one line and exit 2; under 0.2x it trains."""
    out = tmp_path / "tok.json"
    proc = prep_cmd("train-tokenizer", "--input", SAMPLE / "corpus", "--vocab-size", "300", "--output", out)
    if MAJOR == 0:
        assert proc.returncode == 0, proc.stderr
        assert describe_tokenizer(out).vocab_size == 300
    else:
        assert proc.returncode == 2 and not out.exists()
        assert proc.stderr.strip().splitlines() == [
            "prep: error: train-tokenizer needs the tokenizers 0.2x API (trainers); tokenizers 1.x has none: "
            "run it where prep is installed without [fast]"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), [(n, b) for n, bs in PICKABLE.items() for b in bs])
def test_every_backend_matches_the_reference_on_the_whole_corpus(name: str, backend: str) -> None:
    """All 179,111 documents, through the Backend API the stage calls: 0 differing documents."""
    compared, differing, first = _differing(name, backend, sample=None, processes=min(4, os.cpu_count() or 1))
    assert (compared, differing) == (179_111, 0), first


def test_prep_run_does_not_import_the_other_commands(tmp_path: Path) -> None:
    """Fixed cost: `prep run` imports neither the benchmark, the report, the simulator nor the trainer."""
    code = ("import sys; from prep.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m in "
            "('prep.tools.bench', 'prep.tools.report', 'prep.tools.simulate', 'prep.tools.train_tokenizer')))")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", code, "run", "--input", str(SAMPLE / "corpus" / "en.jsonl"),
                           "--output", str(out), "--tokenizer", str(SAMPLE_TOKENIZER), "--workers", "1",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert (out / "_manifest.json").exists(), proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_coordinator_loads_the_tokenizer_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed cost: describe, the end-of-document id, choosing (converting, verifying) share one load."""
    import tokenizers

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "gpt2.json"
    path.write_bytes(GPT2.read_bytes())
    real, loads = tokenizers.Tokenizer, []

    class Counting:
        @staticmethod
        def from_file(file: str):
            loads.append(file)
            return real.from_file(file)

        @staticmethod
        def from_str(text: str):
            loads.append("from_str")
            return real.from_str(text)

    monkeypatch.setattr(tokenizers, "Tokenizer", Counting)
    if MAJOR == 0:
        from prep.text import tiktoken_backend

        monkeypatch.setattr(tiktoken_backend, "Tokenizer", Counting)
    info = describe_tokenizer(path)
    assert eos_id(path, "<|endoftext|>") == 50256
    assert choose_backend(info, "auto", _sample_texts()).backend == AUTO["gpt2"]
    assert loads == [str(path)]
