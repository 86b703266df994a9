"""The open_clip model config of the small CLIP of the ``tiny_clip`` fixture (conftest.py), to save it as a
``local-dir`` CLIP that the pipeline's commands can load."""

from __future__ import annotations

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "samdpo_resnet_s8", "timm_pool": "avg", "timm_proj": "linear", "image_size": 64},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}
