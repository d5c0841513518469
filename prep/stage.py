"""The stage: a pure function from an input batch to an output batch.

It knows nothing of processes or files, so the local and the Ray engine run the same
code, and a test can call it directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.config import PipelineConfig
from prep.features import FEATURES, check_feature_names, compute_features
from prep.tokenizer import Backend, eos_id, load_backend


def selected_features(config: PipelineConfig) -> list[str]:
    """The pipeline's feature list with `all` expanded; num_tokens is always a column."""
    names = list(FEATURES) if "all" in config.features else check_feature_names(config.features)
    return [n for n in names if n != "num_tokens"]


@dataclass
class StageStats:
    documents: int = 0
    filtered: int = 0
    tokens: int = 0
    tokenize_s: float = 0.0
    features_s: float = 0.0


class Stage:
    """Filter, tokenize and annotate one batch of documents."""

    def __init__(self, config: PipelineConfig, backend: Backend | str = "tokenizers") -> None:
        self.config = config
        self.backend = load_backend(config.tokenizer, backend) if isinstance(backend, str) else backend
        self.features = selected_features(config)
        self.eos = eos_id(config.tokenizer, config.eos_token) if config.append_eos else None

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats()
        texts = batch.column("text")
        if self.config.drop_empty and len(batch):
            keep = pc.not_equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0)
            kept = pc.sum(keep).as_py() or 0
            if kept < len(batch):
                stats.filtered = len(batch) - kept
                batch = batch.filter(keep)
                texts = batch.column("text")
        stats.documents = len(batch)

        t0 = time.perf_counter()
        ids, offsets = self.backend.encode_batch(texts.to_pylist())
        if self.eos is not None and len(batch):
            ids = np.insert(ids, offsets[1:], np.uint32(self.eos))
            offsets = offsets + np.arange(len(offsets), dtype=np.int64)
        input_ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids, pa.uint32()))
        t1 = time.perf_counter()
        features = compute_features(texts, input_ids, self.features)
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
        return pa.RecordBatch.from_pydict(columns), stats
