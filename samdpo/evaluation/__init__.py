"""Evaluation of predicted probability maps against the ground truth, and the results tables."""
