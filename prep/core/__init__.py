"""The pipeline's engine-neutral parts: chunks, the task book, routers, the retry policy, the stage."""
