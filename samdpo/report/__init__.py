"""The report's figures: prompts, candidates and predictions before and after alignment."""
