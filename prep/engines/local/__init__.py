"""The local executor: forkserver worker processes, shared-memory slots, a writer process."""
