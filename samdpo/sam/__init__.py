"""SAM models: builders for SAM-Med2D, vanilla SAM and a small SAM, and their checkpoints."""
