"""Benchmark: gScoreCAM against pytorch-grad-cam's ScoreCAM, its floor, and the CRF step.

Measured side by side in one run, on one synthetic AMOS slice, weights random (the cost does not
depend on them), for one of two CLIP image towers:

- ``--arch biomedclip``: BiomedCLIP's (timm ViT-B/16 at 224 px, CAM layer ``blocks.11.norm2``,
  768 channels), gScoreCAM keeping k = 100 channels, as MedCLIP-SAM runs it;
- ``--arch small``: the embedded default's (CNN tower at 128 px, 64 channels), k = 32.

Rows, per (image, class): ScoreCAM (all channels); gScoreCAM through the BaseCAM API; gScoreCAM for
15 classes of one image with shared masked forwards; the floor, one batched forward of k masked
images (what top-k cannot go below); and CRF + box extraction.

Run: ``python benchmarks/saliency_benchmark.py [--arch biomedclip] [--device cuda] [--threads 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import open_clip
import torch
import torch.nn.functional as F
from pytorch_grad_cam import ScoreCAM

from samdpo.clip.loader import resolve_hf_name
from samdpo.clip.pretrain import PretrainSettings, model_config
from samdpo.data import readers
from samdpo.prompts.visual.gscorecam import GScoreCAM
from samdpo.prompts.visual.saliency import PromptTarget, tokens_to_grid
from samdpo.synth import amos

PROMPTS = 16  # 15 classes and one negative prompt


class TowerScorer(torch.nn.Module):
    """Image tower + fixed random text embeddings -> (B, P) logits: the scoring ClipScorer does,
    without a text tower (the text is encoded once and does not enter the CAM's cost)."""

    def __init__(self, visual: torch.nn.Module, dim: int) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("text", F.normalize(torch.randn(PROMPTS, dim), dim=-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 100.0 * F.normalize(self.visual(images), dim=-1) @ self.text.T


def _tower(arch: str) -> tuple[torch.nn.Module, int, int, str, int]:
    """(image tower, embedding dim, input size, CAM layer path, top-k) of one architecture."""
    if arch == "biomedclip":
        # BiomedCLIP's open_clip config: timm vit_base_patch16_224, no pooling, linear projection to 512
        visual = open_clip.timm_model.TimmModel(
            "vit_base_patch16_224", embed_dim=512, image_size=224, pool="", proj="linear"
        )
        return visual, 512, 224, "trunk.blocks.11.norm2", 100
    settings = PretrainSettings()
    cfg = model_config(settings)
    text_dir = resolve_hf_name(settings.text_model)
    build = {**cfg, "text_cfg": {**cfg["text_cfg"], "hf_model_name": str(text_dir), "hf_model_pretrained": False}}
    build.pop("custom_text")
    return open_clip.CustomTextCLIP(**build).visual, settings.embed_dim, settings.image_size, "trunk.layer4", 32


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["biomedclip", "small"], default="biomedclip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-crf", action="store_true", help="skip the CRF row (a machine without pydensecrf)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    visual, dim, size, layer_path, top_k = _tower(args.arch)
    scorer = TowerScorer(visual, dim).eval().to(device)
    layer = scorer.visual.get_submodule(layer_path)
    channels = layer.normalized_shape[0] if hasattr(layer, "normalized_shape") else layer[-1].conv2.out_channels
    with TemporaryDirectory() as tmp:
        amos.write(Path(tmp), 1, seed=1)
        sample = next(s for s in readers.iter_samples("amos", Path(tmp), 128) if s.label.any() and s.slice_index > 20)
    pixels = F.interpolate(
        torch.from_numpy(sample.image)[None, None], size=(size, size), mode="bilinear", align_corners=False
    )[0]
    x = ((pixels.expand(3, -1, -1) - 0.5) / 0.25).to(device)
    others = list(range(1, PROMPTS))
    one = [PromptTarget(0, others)]
    fifteen = [PromptTarget(t, [p for p in range(PROMPTS) if p != t]) for t in range(PROMPTS - 1)]

    scorecam = ScoreCAM(scorer, [layer], reshape_transform=tokens_to_grid)
    scorecam.batch_size = 64
    gscore = GScoreCAM(scorer, [layer], top_k=top_k, batch_size=64, reshape_transform=tokens_to_grid)
    masked = x[None] * torch.rand(top_k, 1, size, size, device=device)

    def timed(fn):
        def run() -> None:
            fn()
            _sync(device)

        return _best(run, args.repeats)

    def floor() -> None:
        with torch.no_grad():
            for start in range(0, top_k, 64):
                scorer(masked[start : start + 64])

    names = (
        f"ScoreCAM (grad-cam, {channels} ch)",
        f"gScoreCAM top-{top_k} (BaseCAM API)",
        f"gScoreCAM top-{top_k}, 15 classes shared",
        f"floor: {top_k} masked images, batched forwards",
    )
    rows = {
        names[0]: timed(lambda: scorecam(x[None], one)),
        names[1]: timed(lambda: gscore(x[None], one)),
        names[2]: timed(lambda: gscore.maps_for_targets(x, fifteen)) / 15,
        names[3]: timed(floor),
    }
    if not args.no_crf:
        from samdpo.prompts.visual.boxes import BoxSettings, mask_to_prompt
        from samdpo.prompts.visual.crf import CrfSettings, crf_mask

        saliency = F.interpolate(
            torch.from_numpy(gscore.maps_for_targets(x, one))[None], size=(128, 128), mode="bilinear"
        )[0, 0].numpy()
        rows["CRF + box (128 px)"] = _best(
            lambda: mask_to_prompt(crf_mask(sample.image, saliency, CrfSettings()), saliency, BoxSettings()),
            args.repeats,
        )

    base, floor_time = rows[names[0]], rows[names[3]]
    print(
        f"arch={args.arch} device={device} threads={args.threads} repeats={args.repeats}: image {size}x{size}, CAM "
        f"layer {channels} channels, times per (image, class)"
    )
    print(f"{'method':44s} {'ms':>10s} {'vs ScoreCAM':>12s} {'vs floor':>9s}")
    for name, seconds in rows.items():
        print(f"{name:44s} {seconds * 1000:10.1f} {base / seconds:11.2f}x {seconds / floor_time:8.2f}x")


if __name__ == "__main__":
    main()
