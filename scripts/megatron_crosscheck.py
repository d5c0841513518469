"""Check prep's Megatron files with Megatron-LM's own code: its IndexedDataset reads them, and its
IndexedDatasetBuilder, fed the Parquet rows as preprocess_data.py feeds it, writes the same bytes.

Megatron's indexed_dataset.py imports torch only for a base class and type hints, so it runs here without a GPU
stack: torch and the package __init__ files (which import the training stack) are stubbed.

    .venv/bin/pip download megatron-core --no-deps -d /tmp/mc
    python -m zipfile -e /tmp/mc/megatron_core-*.whl /tmp/mc/x
    .venv/bin/python scripts/megatron_crosscheck.py /tmp/mc/x OUT
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def load_indexed_dataset(root: Path) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.utils = types.ModuleType("torch.utils")
    torch.utils.data = types.ModuleType("torch.utils.data")
    torch.utils.data.Dataset, torch.Tensor = object, object
    utils = types.ModuleType("megatron.core.utils")
    utils.log_single_rank = lambda *args, **kwargs: None
    sys.modules.update({"torch": torch, "torch.utils": torch.utils, "torch.utils.data": torch.utils.data,
                        "megatron.core.utils": utils})
    for name in ("megatron", "megatron.core", "megatron.core.datasets"):
        package = types.ModuleType(name)
        package.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = package
    spec = importlib.util.spec_from_file_location("indexed_dataset",
                                                  root / "megatron/core/datasets/indexed_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    idx = load_indexed_dataset(root)
    manifest = json.loads((out / "_manifest.json").read_text())
    dtype = idx.DType.optimal_dtype(manifest["tokenizer"]["vocab_size"])
    work = Path(tempfile.mkdtemp(prefix="megatron-crosscheck-"))
    for k, shard in enumerate(manifest["shards"]):
        prefix = out / f"part-{k:05d}-train_text_document"
        dataset = idx.IndexedDataset(str(prefix))
        rows = pq.read_table(out / shard["file"]).column("input_ids").to_pylist()
        assert len(dataset) == len(rows), (len(dataset), len(rows))
        assert all(dataset[i].tolist() == r for i, r in enumerate(rows))
        builder = idx.IndexedDatasetBuilder(str(work / f"{k}.bin"), dtype=dtype)
        for r in rows:
            builder.add_document(np.array(r), [len(r)])
        builder.finalize(str(work / f"{k}.idx"))
        for ext in (".bin", ".idx"):
            assert (work / f"{k}{ext}").read_bytes() == Path(f"{prefix}{ext}").read_bytes(), f"shard {k}: {ext}"
        print(f"shard {k}: {len(rows):,} documents read by Megatron's IndexedDataset ({dtype.__name__}); "
              "Megatron's builder writes the same .bin/.idx bytes")


if __name__ == "__main__":
    main()
