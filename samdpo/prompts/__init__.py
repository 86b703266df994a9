"""Prompts generated without humans: saliency, CRF masks, boxes and points, text."""
