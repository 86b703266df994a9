"""Dense CRF (pydensecrf) that turns a saliency map into a binary foreground mask.

The pairwise terms follow MedCLIP-SAM: a Gaussian smoothness kernel (``sxy=3, compat=3``) and a
bilateral appearance kernel (``sxy=60, srgb=5, compat=5``) on the image replicated to RGB uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydensecrf import densecrf
from pydensecrf.utils import unary_from_softmax

from samdpo.errors import ConfigError, DataError

#: Foreground probabilities are clipped to [_EPS, 1 - _EPS] before the negative log.
_EPS = 1e-5
_UNARIES = ("raw", "sigmoid")


@dataclass(frozen=True)
class CrfSettings:
    """CRF settings.

    Attributes:
        iterations: mean-field iterations (MedCLIP-SAM runs one).
        gaussian_sxy: spatial standard deviation of the smoothness kernel, in pixels.
        gaussian_compat: weight of the smoothness kernel (Potts compatibility).
        bilateral_sxy: spatial standard deviation of the appearance kernel, in pixels.
        bilateral_srgb: intensity standard deviation of the appearance kernel, in uint8 grey levels
            per channel (the grey image is replicated to three channels).
        bilateral_compat: weight of the appearance kernel (Potts compatibility).
        unary: ``raw`` uses the saliency as the foreground probability; ``sigmoid`` sharpens it
            first, ``p = sigmoid(sigmoid_gain * (s - sigmoid_center))`` (a raw unary with strong
            compatibilities wipes out weak maps).
        sigmoid_center: saliency value mapped to p = 0.5, in [0, 1].
        sigmoid_gain: slope of the sharpening sigmoid, positive.
    """

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 60.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 5.0
    unary: str = "sigmoid"
    sigmoid_center: float = 0.25
    sigmoid_gain: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ConfigError(f"crf.iterations must be an integer >= 1, got {self.iterations!r}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "sigmoid_gain"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"crf.{name} must be a positive number, got {value!r}")
        for name in ("gaussian_compat", "bilateral_compat"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"crf.{name} must be a number >= 0, got {value!r}")
        if self.unary not in _UNARIES:
            raise ConfigError(f"crf.unary must be 'raw' or 'sigmoid', got {self.unary!r}")
        if not 0.0 <= self.sigmoid_center <= 1.0:
            raise ConfigError(f"crf.sigmoid_center must lie in [0, 1], got {self.sigmoid_center!r}")


def foreground_probability(saliency: np.ndarray, settings: CrfSettings) -> np.ndarray:
    """The CRF's foreground probability from a saliency map.

    Args:
        saliency: (H, W) float saliency in [0, 1].
        settings: ``unary``, ``sigmoid_center`` and ``sigmoid_gain`` are used.

    Returns:
        (H, W) float32 probability, clipped to [1e-5, 1 - 1e-5].
    """
    s = np.asarray(saliency, dtype=np.float64)
    if settings.unary == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-settings.sigmoid_gain * (s - settings.sigmoid_center)))
    return np.clip(s, _EPS, 1.0 - _EPS).astype(np.float32)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8, or float in [0, 1] (clipped), -> (H, W, 3) C-contiguous uint8."""
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))


def crf_mask(image: np.ndarray, saliency: np.ndarray, settings: CrfSettings) -> np.ndarray:
    """Binary foreground mask from a 2-label dense CRF over a saliency map.

    The unary is ``-log [1 - p, p]`` with p from :func:`foreground_probability`; ties between the
    two labels go to background. Hence a constant saliency map (no information) gives an empty
    mask whenever its value is <= 0.5 with the ``raw`` unary, or <= ``sigmoid_center`` with the
    ``sigmoid`` unary (<= 0.5 with the defaults): the Potts pairwise terms only pull pixels towards
    their neighbours' labels and cannot create foreground where no pixel favours it.

    Args:
        image: (H, W) grey image, float in [0, 1] (values outside are clipped) or uint8.
        saliency: (H, W) float saliency in [0, 1] (e.g. a normalised CAM).
        settings: CRF settings.

    Returns:
        (H, W) bool foreground mask.

    Raises:
        ValueError: ``image`` or ``saliency`` is not 2D, or their shapes differ.
        DataError: ``image`` or ``saliency`` holds NaN or infinite values.
    """
    image = np.asarray(image)
    saliency = np.asarray(saliency)
    if image.ndim != 2 or saliency.ndim != 2:
        raise ValueError(f"crf_mask needs (H, W) image and saliency, got {image.shape} and {saliency.shape}")
    if image.shape != saliency.shape:
        raise ValueError(f"image shape {image.shape} differs from saliency shape {saliency.shape}")
    if not np.isfinite(saliency).all():
        raise DataError("saliency map holds NaN or infinite values")
    if image.dtype != np.uint8 and not np.isfinite(image).all():
        raise DataError("image holds NaN or infinite values")
    height, width = saliency.shape
    p = foreground_probability(saliency, settings)
    crf = densecrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(unary_from_softmax(np.stack([1.0 - p, p]), clip=_EPS))
    crf.addPairwiseGaussian(sxy=settings.gaussian_sxy, compat=settings.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=settings.bilateral_sxy,
        srgb=settings.bilateral_srgb,
        rgbim=_to_rgb_uint8(image),
        compat=settings.bilateral_compat,
    )
    q = np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(2, height, width)
    return q[1] > q[0]
