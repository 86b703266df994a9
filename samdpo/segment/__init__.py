"""Segmenting a new image with a trained model: its prompt recipe, the image in and the masks out."""
