"""Stage-1 training of SAM with fused prompts, and prediction of probability maps."""
