"""Thread settings of the processes that tokenize: the pipeline's parallelism is its processes."""

import os


def single_thread_env() -> None:
    """One tokenizer thread per worker: the pipeline's parallelism is its processes."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
