"""Which SAM to build, checked without importing torch: :class:`SamSettings`, each model's input side and
pixel normalisation. :mod:`samdpo.sam.builders` builds the model these settings name."""

from __future__ import annotations

from dataclasses import dataclass, fields

from samdpo.errors import ConfigError
from samdpo.sam import lite_medsam

#: Patch side (pixels) of segment_anything's ViT encoders.
VIT_PATCH = 16
#: Input side (pixels) each model was trained at; callers use it when no size is configured.
DEFAULT_IMAGE_SIZE = {
    "sam_med2d": 256,
    "sam_vit_b": 1024,
    "sam_vit_l": 1024,
    "sam_vit_h": 1024,
    "lite_medsam": lite_medsam.IMAGE_SIZE,
    "small": 128,
}
#: Input normalisation each model was trained with (``imagenet`` where not named).
NORMALISATION = {"lite_medsam": "minmax"}
#: Values of ``sam.engine`` (:mod:`samdpo.sam.engine`).
ENGINES = ("onnxruntime", "torch")
#: SamSettings fields that only the ``small`` model reads.
_SMALL_ONLY = (
    "encoder_width",
    "encoder_depth",
    "encoder_heads",
    "patch_size",
    "prompt_dim",
    "window_size",
    "global_attn_indexes",
)


@dataclass(frozen=True)
class SamSettings:
    """Which SAM to build.

    Attributes:
        name: one of :data:`DEFAULT_IMAGE_SIZE`'s keys (:data:`samdpo.sam.builders.BUILDERS` builds each).
        image_size: input side in pixels (a multiple of the patch size; of 32 for ``sam_med2d``).
        checkpoint: weights file loaded after building (``.pth`` or ``.safetensors``), or None.
        encoder_width: ``small`` only: ViT embedding width.
        encoder_depth: ``small`` only: number of ViT blocks.
        encoder_heads: ``small`` only: attention heads per block (must divide the width).
        patch_size: ``small`` only: patch side in pixels.
        prompt_dim: ``small`` only: prompt embedding width (SAM uses 256); a multiple of 8.
        window_size: ``small`` only: window side in tokens for windowed attention (0: global).
        global_attn_indexes: ``small`` only: blocks that attend globally when windows are used.
        engine: ``onnxruntime``: inference jobs run the frozen encoder and decoder through ONNX Runtime
            (:mod:`samdpo.sam.engine`); ``torch``: they run torch eager, as training does.
        engine_cache: folder of the exported ONNX graphs (one file per weights' hash).
    """

    name: str
    image_size: int
    checkpoint: str | None = None
    encoder_width: int = 96
    encoder_depth: int = 4
    encoder_heads: int = 4
    patch_size: int = 8
    prompt_dim: int = 64
    window_size: int = 0
    global_attn_indexes: tuple[int, ...] = ()
    engine: str = "onnxruntime"
    engine_cache: str = "results/engine"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in DEFAULT_IMAGE_SIZE:
            raise ConfigError(f"sam.name: unknown SAM {self.name!r}; choose one of {sorted(DEFAULT_IMAGE_SIZE)}")
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str) or not self.checkpoint):
            raise ConfigError(f"sam.checkpoint: expected a file name or null, got {self.checkpoint!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"sam.engine: expected one of {list(ENGINES)}, got {self.engine!r}")
        if not self.engine_cache:
            raise ConfigError("sam.engine_cache: expected a folder name, got an empty string")
        object.__setattr__(self, "global_attn_indexes", _int_tuple("global_attn_indexes", self.global_attn_indexes))
        for name in ("image_size", "encoder_width", "encoder_depth", "encoder_heads", "patch_size", "prompt_dim"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("window_size", self.window_size, minimum=0)
        if self.name == "lite_medsam" and self.image_size != lite_medsam.IMAGE_SIZE:
            raise ConfigError(
                f"sam.image_size: lite_medsam takes {lite_medsam.IMAGE_SIZE} px inputs only, got {self.image_size}"
            )
        if self.name == "small":
            self._check_small()
        else:
            self._check_vit()

    def _check_vit(self) -> None:
        """ViT models: the small-model fields keep their defaults; the size fits the patches."""
        for field in fields(self):
            if field.name in _SMALL_ONLY and getattr(self, field.name) != field.default:
                raise ConfigError(f"sam.{field.name} applies to sam.name 'small' only, not {self.name!r}")
        multiple = 2 * VIT_PATCH if self.name == "sam_med2d" else VIT_PATCH
        if self.image_size % multiple:
            why = " (the adapters' stride-2 convolution needs an even token grid)" if self.name == "sam_med2d" else ""
            raise ConfigError(f"sam.image_size: {self.image_size} is not a multiple of {multiple} for {self.name}{why}")

    def _check_small(self) -> None:
        """``small``: sizes that its encoder, prompt encoder and decoder accept."""
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"sam.image_size: {self.image_size} is not a multiple of sam.patch_size {self.patch_size}"
            )
        if self.encoder_width % self.encoder_heads:
            raise ConfigError(
                f"sam.encoder_width: {self.encoder_width} is not a multiple of sam.encoder_heads {self.encoder_heads}"
            )
        if self.prompt_dim % 8:
            raise ConfigError(
                f"sam.prompt_dim: {self.prompt_dim} is not a multiple of 8 (the mask decoder divides it by 8)"
            )
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ConfigError(f"sam.global_attn_indexes: {bad} are not block indexes 0..{self.encoder_depth - 1}")


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raise ConfigError unless ``value`` is an int >= ``minimum`` (bools rejected)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"sam.{name}: expected an integer >= {minimum}, got {value!r}")


def _int_tuple(name: str, value: object) -> tuple[int, ...]:
    """A list / tuple of ints as a tuple (YAML gives lists); ConfigError otherwise."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"sam.{name}: expected a list of integers, got {value!r}")
    return tuple(value)
