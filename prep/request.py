"""What `prep run` asks for, as one typed value that the run preparation hands to an executor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prep.config import PipelineConfig


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
