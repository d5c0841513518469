"""prep: raw text corpora to tokenized, feature-annotated, sharded Parquet."""

__version__ = "0.1.0"
