"""Shared fixtures: real corpus slices, the shared tokenizers, and a `prep` runner."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"
GPT2 = SHARED / "tokenizers" / "gpt2.tokenizer.json"
BERT_ZH = SHARED / "tokenizers" / "bert-base-chinese.tokenizer.json"
QWEN2 = SHARED / "tokenizers" / "qwen2.tokenizer.reconstructed.json"
SAMPLE = ROOT / "sample_data"
SAMPLE_TOKENIZER = SAMPLE / "tokenizer.json"


def load_script(name: str):  # noqa: ANN201 - a module
    """scripts/NAME.py as a module: what a script measures or generates, the tests check with its own code."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NO_SKIP = os.environ.get("PREP_NO_SKIP") == "1" or os.environ.get("CI", "").lower() in ("1", "true")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (.ci/run sets PREP_NO_SKIP=1) every prerequisite is provided, so a test that skips for want of one
    (root, mount, setpriv, chromium, Ray, the shared corpus or tokenizers) did not test anything: a failure."""
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where PREP_NO_SKIP=1 (CI) requires every prerequisite: {reason}"


def corpus_docs(name: str, limit: int) -> list[dict]:
    """The first `limit` documents of one shared corpus file."""
    with gzip.open(CORPUS / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, limit)]


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def write_piece_inputs(inputs: Path, ids: list[str], texts: list[str | None], parquet_rows: int, dataset_rows: int,
                       row_group_size: int) -> Path:
    """A folder of the formats prep cuts from metadata: the first rows as Parquet, the next as a saved dataset
    (two Arrow files), then one .txt file per remaining text, in order."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ids, "text": texts})
    inputs.mkdir(parents=True)
    pq.write_table(table.slice(0, parquet_rows), inputs / "a.parquet", row_group_size=row_group_size)
    datasets.Dataset(table.slice(parquet_rows, dataset_rows)).save_to_disk(str(inputs / "b_saved"), num_shards=2)
    (inputs / "c_txt").mkdir()
    for i, text in enumerate(texts[parquet_rows + dataset_rows:]):
        (inputs / "c_txt" / f"{i:03d}.txt").write_text(text, encoding="utf-8", newline="")
    return inputs


def prep_cmd(*args: str, timeout: float = 300, check: bool = False, env: dict | None = None,
             ) -> subprocess.CompletedProcess:
    """Run the real command line in a child process, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "prep", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"prep {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def as_if_not_root() -> list[str]:
    """A command prefix under which file permissions hold, also for root (which otherwise ignores them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def shard_bytes_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("prep_*")}


def orphan_segments(before: set[str]) -> set[str]:
    """prep segments made since `before` that no live process maps: a run's leftovers, told apart from the
    segments of other prep runs on the machine (a helper's, a parallel test's), which are mapped while they run."""
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped |= {line.rsplit("/", 1)[-1].split(" ")[0] for line in maps.read_text().splitlines()
                       if "/dev/shm/prep_" in line}
        except OSError:  # the process ended meanwhile
            continue
    return {name for name in shm_segments() - before if name not in mapped}


@pytest.fixture
def mixed_corpus(tmp_path: Path) -> Path:
    """About 400 KB of real English, Chinese and code documents in two files."""
    docs_dir = tmp_path / "in"
    write_jsonl(docs_dir / "a.jsonl", corpus_docs("en_fortunes", 400) + corpus_docs("zh_poetry", 400))
    write_jsonl(docs_dir / "b.jsonl", corpus_docs("code_js_npm", 40) + corpus_docs("en_foldoc", 300))
    return docs_dir
