"""Commands beside the runtime: bench, report, simulate, train-tokenizer, the summary."""
