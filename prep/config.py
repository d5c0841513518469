"""The effective pipeline: built-in defaults, then a pipeline file (TOML), then flags."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep.errors import UserError

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30,
}


def parse_size(value: str | int, what: str = "size") -> int:
    """`262144`, `256KiB`, `1MiB`, `64MB` -> bytes (KB = 1000, KiB = 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise UserError(f"bad {what} {value!r}: use a number of bytes or e.g. 256KiB, 1MiB, 64MB")
        number, unit = float(m.group(1)), m.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise UserError(f"bad {what} {value!r}: must be positive")
    return size


@dataclass
class PipelineConfig:
    """Everything that decides what is written (and, for `run`, how it is computed)."""

    name: str = "default"
    # input
    text_field: str = "text"
    id_field: str = "id"
    keep_columns: list[str] = field(default_factory=list)
    max_document_bytes: int = 64 * 2**20  # a longer record is quarantined (read in bounded pieces)
    # tokenizer
    tokenizer: str | None = None
    backend: str = "auto"
    append_eos: bool = False
    eos_token: str | None = None
    # features and filters
    features: list[str] = field(default_factory=lambda: ["all"])
    drop_empty: bool = True
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)  # [filter.NAME] tables (prep.text.filters)
    keep_filtered: bool = False  # write the removed documents' ids, rule and failing value to _filtered.parquet
    # deduplication (prep.core.dedup): decided by the writer, in seq order
    dedup_exact: bool = False
    dedup_near: bool = False  # MinHash LSH on word n-grams
    dedup_ngram: int = 5
    dedup_num_perm: int = 112
    dedup_bands: int = 14
    dedup_rows: int = 8
    dedup_threshold: float | None = None  # near: also require this Jaccard similarity of shingles
    dedup_memory: int = 2 * 2**30  # the index's memory budget; past it, it spills to disk (never changes output)
    # output
    keep_text: bool = False
    shard_bytes: int = 256 * 2**20
    compression: str = "zstd"
    formats: list[str] = field(default_factory=lambda: ["parquet"])  # parquet, megatron, llmc (io/trainer_formats.py)
    llmc_dtype: str = "auto"
    # packing: rows of exactly pack_seq_len tokens (None: one row per document)
    pack_seq_len: int | None = None
    pack_method: str = "concat"
    pack_window_docs: int = 10_000
    # run (these decide where work runs, never what is written)
    workers: int = 0
    router: str = "p2c"
    seed: int = 0
    chunk_bytes: int = 2**20
    strict: bool = False
    chunk_timeout_s: float = 300.0

    def output_fingerprint(self) -> dict[str, Any]:
        """The fields that decide the output bytes (what `--resume` must match)."""
        ignored = {"workers", "router", "seed", "chunk_timeout_s", "name", "dedup_memory"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def compiled_code(self) -> tuple[str, ...]:
        """Which compiled code (numba) the workers run, for the forkserver to load once: "features" (~0.25 s and
        ~100 MB a process) unless they compute num_tokens and num_bytes alone, with bounds on those only and no
        exact dedup (its key hashes the features' normalised text); "rules" (~0.2 s) with a filter rule set."""
        plain = {"none", "num_tokens", "num_bytes"}
        bounds = self.filters.get("bounds", {})
        features = bool(set(self.features) - plain or set(bounds) - plain or self.dedup_exact)
        rules = bool(set(self.filters) - {"bounds"})
        return ("features",) * features + ("rules",) * rules


_SECTIONS = {
    "input": {"text_field", "id_field", "keep_columns", "max_document_bytes"},
    "tokenizer": {"path", "backend", "append_eos", "eos_token"},
    "features": {"compute"},
    "filter": {"drop_empty", "keep_filtered"},
    "output": {"keep_text", "shard_bytes", "compression", "formats", "llmc_dtype"},
    "pack": {"seq_len", "method", "window_docs"},
    "dedup": {"exact", "near", "memory", "ngram", "num_perm", "bands", "rows", "threshold"},
    "run": {"workers", "router", "seed", "chunk_bytes", "strict", "chunk_timeout_s"},
}
_RENAMES = {("tokenizer", "path"): "tokenizer", ("features", "compute"): "features",
            ("pack", "seq_len"): "pack_seq_len", ("pack", "method"): "pack_method",
            ("pack", "window_docs"): "pack_window_docs", ("dedup", "exact"): "dedup_exact",
            **{("dedup", k): f"dedup_{k}" for k in ("near", "memory", "ngram", "num_perm", "bands", "rows",
                                                    "threshold")}}
_SIZES = {"shard_bytes", "chunk_bytes", "max_document_bytes", "dedup_memory"}
_BOOLS = {"dedup_exact", "dedup_near"}


def load_pipeline(path: str | Path | None) -> PipelineConfig:
    """Read a pipeline file; relative tokenizer paths are relative to the file."""
    config = PipelineConfig()
    if path is None:
        return config
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pipeline file not found: {path}")
    import tomllib  # here: the command line builds its config before the forkserver starts

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"bad pipeline file {path}: {exc}") from None
    config.name = str(data.pop("name", path.stem))
    for section, values in data.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise UserError(f"bad pipeline file {path}: unknown section [{section}]")
        for key, value in values.items():
            if section == "filter" and isinstance(value, dict):
                config.filters[key] = value  # a rule set; checked below
                continue
            if key not in _SECTIONS[section]:
                known = sorted(_SECTIONS[section])
                if section == "filter":
                    from prep.text.filters import RULE_SETS

                    known += [f"[filter.{name}]" for name in (*RULE_SETS, "bounds")]
                raise UserError(f"bad pipeline file {path}: unknown key {key!r} in [{section}]; known: "
                                f"{', '.join(known)}")
            name = _RENAMES.get((section, key), key)
            if name in _SIZES:
                value = parse_size(value, name)
            if name in _BOOLS and not isinstance(value, bool):
                raise UserError(f"bad pipeline file {path}: [{section}] {key} must be true or false")
            setattr(config, name, value)
    if config.filters:
        from prep.text.features import FEATURES
        from prep.text.filters import check_filters

        try:
            config.filters = check_filters(config.filters, FEATURES)
        except UserError as exc:
            raise UserError(f"bad pipeline file {path}: {exc}") from None
    from prep.core.dedup import check_dedup

    try:
        check_dedup(config)
    except UserError as exc:
        raise UserError(f"bad pipeline file {path}: {exc}") from None
    if config.tokenizer and not Path(config.tokenizer).is_absolute():
        config.tokenizer = str((path.parent / config.tokenizer).resolve())
    return config


def apply_overrides(config: PipelineConfig, **overrides: Any) -> PipelineConfig:
    """Flags win over the file; a None flag means 'not given'."""
    for key, value in overrides.items():
        if value is None:
            continue
        if not hasattr(config, key):
            raise KeyError(key)
        if key in _SIZES:
            value = parse_size(value, key.replace("_", "-"))
        setattr(config, key, value)
    return config
