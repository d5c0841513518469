"""Executors: thin wiring of the same parts onto processes (local) or actors (ray)."""
