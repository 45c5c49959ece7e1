"""Versions: the GTO model registry (git tags) and DVC-tracked data versions."""
