"""Text prompts without humans: VQA answers and LLM descriptions, the OpenAI-compatible client, and
the answer cache that makes every question asked once."""
