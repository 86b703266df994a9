"""CLIP: loading a user's model (Hugging Face cache or a local folder), the pipeline's small CLIP
(CNN tower, captions, contrastive pretraining on the labelled split)."""
