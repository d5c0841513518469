"""What `prep run` asks for (RunRequest), and what the run preparation hands to an executor (Plan)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prep.config import PipelineConfig
from prep.core.chunk import Chunk
from prep.core.router import Router
from prep.text.tokenizer import TokenizerInfo


@dataclass
class RunRequest:
    inputs: Sequence[str]
    output: Path
    config: PipelineConfig
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    slow_workers: dict[int, float] | None = None
    engine: str = "local"  # "local" | "ray"; with "ray", inputs and output may be URIs (s3://, gs://, ...)
    ray_address: str | None = None


@dataclass
class Plan:
    """What the run preparation hands an executor, the same for both: the pipeline, the backend chosen, the
    router, where a resumed run starts, and what the manifest says beside the counts."""

    config: PipelineConfig
    tokenizer: TokenizerInfo
    router: Router
    start_seq: int = 0
    journal_entries: list[dict] = field(default_factory=list)
    on_progress: Callable[[int, int], None] = lambda _bytes, _docs: None
    slow_workers: dict[int, float] = field(default_factory=dict)
    manifest_base: dict = field(default_factory=dict)
    # the chunk stream again, from a seq on (the input cut anew: the same chunks); None: chunks stay in memory
    replay: Callable[[int], Iterator[Chunk]] | None = None
