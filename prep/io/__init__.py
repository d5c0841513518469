"""Inputs and outputs: sources, the writer, trainer formats, output ownership and verification."""
