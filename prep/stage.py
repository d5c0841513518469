"""The stage: a pure function from an input batch to an output batch.

It knows nothing of processes or files, so the local and the Ray engine run the same
code, and a test can call it directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.config import PipelineConfig
from prep.features import FEATURES, check_feature_names, compute_features
from prep.filters import Verdict, bounds_verdict, judge, merge, text_verdict
from prep.tokenizer import Backend, eos_id, load_backend


def selected_features(config: PipelineConfig) -> list[str]:
    """The pipeline's feature list with `all` expanded; num_tokens is always a column."""
    names = list(FEATURES) if "all" in config.features else check_feature_names(config.features)
    return [n for n in names if n != "num_tokens"]


@dataclass
class StageStats:
    documents: int = 0
    filtered: int = 0
    filtered_by: dict[str, int] = field(default_factory=dict)  # first rule failed -> documents
    filter_skipped: dict[str, int] = field(default_factory=dict)  # rule set -> documents it did not judge (CJK)
    filtered_rows: list[dict] = field(default_factory=list)  # with keep_filtered: {id, rule, value, threshold}
    tokens: int = 0
    tokenize_s: float = 0.0
    features_s: float = 0.0
    filter_s: float = 0.0

    def add(self, verdict: Verdict, ids: pa.Array, keep_rows: bool) -> None:
        """Count the documents a verdict removed (and, if asked, keep their ids and failing values)."""
        for rule, count in verdict.counts().items():
            self.filtered_by[rule] = self.filtered_by.get(rule, 0) + count
            self.filtered += count
        for name, count in verdict.skipped.items():
            self.filter_skipped[name] = self.filter_skipped.get(name, 0) + count
        if keep_rows:
            gone = np.flatnonzero(~verdict.keep)
            values, thresholds = verdict.value[gone].tolist(), verdict.threshold[gone].tolist()
            for i, value, threshold in zip(gone.tolist(), values, thresholds, strict=True):
                self.filtered_rows.append({
                    "id": ids[i].as_py(), "rule": verdict.names[verdict.rule[i]],
                    "value": None if value != value else value,
                    "threshold": None if threshold != threshold else threshold,
                })


class Stage:
    """Filter, tokenize and annotate one batch of documents."""

    def __init__(self, config: PipelineConfig, backend: Backend | str = "tokenizers") -> None:
        self.config = config
        self.backend = load_backend(config.tokenizer, backend) if isinstance(backend, str) else backend
        self.features = selected_features(config)
        self.rule_sets = {k: v for k, v in config.filters.items() if k != "bounds"}
        self.bounds = config.filters.get("bounds", {})
        # features the bounds need but the output does not keep: computed, judged, then dropped
        self.bound_only = [f for f in self.bounds if f not in self.features and f != "num_tokens"]
        self.eos = eos_id(config.tokenizer, config.eos_token) if config.append_eos else None

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats()
        texts = batch.column("text")
        if len(batch) and (self.config.drop_empty or self.rule_sets):
            t = time.perf_counter()
            verdict = judge([], len(batch))
            if self.config.drop_empty:
                empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0).fill_null(True)
                verdict = judge([("empty", np.asarray(empty, np.float64), ">", 0.5)], len(batch))
            if self.rule_sets:
                verdict = merge(verdict, text_verdict(texts, self.rule_sets))
            if not verdict.keep.all():
                stats.add(verdict, batch.column("id"), self.config.keep_filtered)
                batch = batch.filter(pa.array(verdict.keep))
                texts = batch.column("text")
            elif verdict.skipped:
                stats.add(verdict, batch.column("id"), False)
            stats.filter_s = time.perf_counter() - t
        t0 = time.perf_counter()
        ids, offsets = self.backend.encode_batch(texts.to_pylist())
        if self.eos is not None and len(batch):
            ids = np.insert(ids, offsets[1:], np.uint32(self.eos))
            offsets = offsets + np.arange(len(offsets), dtype=np.int64)
        input_ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids, pa.uint32()))
        t1 = time.perf_counter()
        features = compute_features(texts, input_ids, self.features + self.bound_only)
        stats.features_s = time.perf_counter() - t1
        stats.tokenize_s = t1 - t0
        stats.tokens = len(ids)

        columns = {"id": batch.column("id"), "input_ids": input_ids}
        columns["num_tokens"] = pa.array(np.diff(offsets), pa.int64())
        columns.update(features)
        if self.config.keep_text:
            columns["text"] = texts
        for name in self.config.keep_columns:
            columns[name] = batch.column(name)
        if self.bounds and len(batch):
            t2 = time.perf_counter()
            verdict = bounds_verdict(columns, self.bounds, len(batch))
            if not verdict.keep.all():
                stats.add(verdict, batch.column("id"), self.config.keep_filtered)
                keep = pa.array(verdict.keep)
                columns = {name: pc.filter(column, keep) for name, column in columns.items()}
                stats.tokens = int(pc.sum(columns["num_tokens"]).as_py() or 0)
            stats.filter_s += time.perf_counter() - t2
        for name in self.bound_only:
            del columns[name]
        stats.documents = len(columns["id"])
        return pa.RecordBatch.from_pydict(columns), stats
