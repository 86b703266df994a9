"""Synthetic phantoms written in the real datasets' on-disk layouts (the embedded default's data)."""
