"""The Ray executor: reader tasks, stage and writer actors, the same task book."""
