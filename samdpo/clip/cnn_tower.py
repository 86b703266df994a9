"""The image tower of the embedded default's CLIP: a small stride-8 ResNet registered with timm.

open_clip builds timm towers by name (``vision_cfg.timm_model_name``), so registering the name here
lets a ``local-dir:`` CLIP saved by the pipeline load through open_clip's own code, as BiomedCLIP
does. Stride 8 (dilated last stages) keeps a 16x16 activation grid at 128 px, fine enough for CAMs
of small organs; a CNN with average pooling gave far better saliency than a ViT in our prototype
(see the brief, "Saliency on synthetic data").
"""

from __future__ import annotations

from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet

TOWER_NAME = "samdpo_resnet_s8"


@register_model
def samdpo_resnet_s8(pretrained: bool = False, **kwargs: object) -> ResNet:
    """ResNet with a deep 3x3 stem (width 8), one BasicBlock per stage of widths 16-32-48-64 and
    output stride 8 (0.13 M parameters, about 2 ms per 128 px image on one CPU core pair)."""
    if pretrained:
        raise ValueError(f"{TOWER_NAME} has no pretrained weights; the pipeline trains it")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
    model = ResNet(
        BasicBlock, (1, 1, 1, 1), channels=(16, 32, 48, 64), stem_width=8, stem_type="deep", output_stride=8, **kwargs
    )
    model.pretrained_cfg = model.default_cfg = {"architecture": TOWER_NAME, "num_classes": 0}
    return model
