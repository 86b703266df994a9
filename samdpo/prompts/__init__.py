"""Prompts generated without humans: visual (:mod:`samdpo.prompts.visual`) and text
(:mod:`samdpo.prompts.text`), merged into the per-image Parquet store (:mod:`samdpo.prompts.store`)."""
