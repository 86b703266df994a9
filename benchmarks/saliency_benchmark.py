"""Benchmark: gScoreCAM against pytorch-grad-cam's ScoreCAM, its floor, and the CRF step.

Measured side by side in one run, on the embedded default's CLIP architecture (CNN tower at
128 px, 64 channels in the CAM layer; weights random, which does not change the cost) and one
synthetic image:

- ScoreCAM (pytorch-grad-cam, all 64 channels) per (image, class);
- gScoreCAM, top-32, through the BaseCAM API per (image, class);
- gScoreCAM, top-32, for 15 classes of one image with shared masked forwards, per (image, class);
- the floor: one batched forward of 32 masked images (what top-32 cannot go below);
- CRF + box extraction per (image, class).

Run: ``python benchmarks/saliency_benchmark.py [--threads 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import open_clip
import torch
from pytorch_grad_cam import ScoreCAM

from samdpo.data import readers
from samdpo.prompts.boxes import BoxSettings, mask_to_prompt
from samdpo.prompts.clip_loader import LoadedClip, resolve_hf_name
from samdpo.prompts.clip_pretrain import PretrainSettings, model_config
from samdpo.prompts.crf import CrfSettings, crf_mask
from samdpo.prompts.gscorecam import GScoreCAM
from samdpo.prompts.saliency import ClipScorer, PromptTarget
from samdpo.synth import amos


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    settings = PretrainSettings()
    cfg = model_config(settings)
    text_dir = resolve_hf_name(settings.text_model)
    build = {**cfg, "text_cfg": {**cfg["text_cfg"], "hf_model_name": str(text_dir), "hf_model_pretrained": False}}
    build.pop("custom_text")
    model = open_clip.CustomTextCLIP(**build).eval()
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir), context_length=32)
    clip = LoadedClip(model, None, tokenizer, "benchmark", 128, (0.5,) * 3, (0.25,) * 3)
    with TemporaryDirectory() as tmp:
        amos.write(Path(tmp), 1, seed=1)
        sample = next(s for s in readers.iter_samples("amos", Path(tmp), 128) if s.label.any() and s.slice_index > 20)
    prompts = [f"an abdominal CT slice with the organ {i}" for i in range(15)] + ["background"]
    scorer = ClipScorer(clip, prompts).eval()
    layer = scorer.clip.visual.trunk.layer4
    x = (torch.from_numpy(sample.image)[None].expand(3, -1, -1) - 0.5) / 0.25
    others = list(range(1, 16))
    one = [PromptTarget(0, others)]
    fifteen = [PromptTarget(t, [p for p in range(16) if p != t]) for t in range(15)]

    scorecam = ScoreCAM(scorer, [layer])
    scorecam.batch_size = 64
    gscore = GScoreCAM(scorer, [layer], top_k=32, batch_size=64)
    masked = x[None] * torch.rand(32, 1, 128, 128)

    def floor() -> None:
        with torch.no_grad():
            scorer(masked)

    rows = {
        "ScoreCAM (grad-cam, 64 ch)": _best(lambda: scorecam(x[None], one), args.repeats),
        "gScoreCAM top-32 (BaseCAM API)": _best(lambda: gscore(x[None], one), args.repeats),
        "gScoreCAM top-32, 15 classes shared": _best(lambda: gscore.maps_for_targets(x, fifteen), args.repeats) / 15,
        "floor: 32 masked images, 1 forward": _best(floor, args.repeats),
    }
    saliency = gscore.maps_for_targets(x, one)[0]
    rows["CRF + box (128 px)"] = _best(lambda: mask_to_prompt(crf_mask(sample.image, saliency, CrfSettings()), saliency, BoxSettings()), args.repeats)

    base = rows["ScoreCAM (grad-cam, 64 ch)"]
    floor_time = rows["floor: 32 masked images, 1 forward"]
    print(f"threads={args.threads}  image 128x128, CAM layer 64 channels, times per (image, class)")
    print(f"{'method':40s} {'ms':>9s} {'vs ScoreCAM':>12s} {'vs floor':>9s}")
    for name, seconds in rows.items():
        print(f"{name:40s} {seconds * 1000:9.1f} {base / seconds:11.2f}x {seconds / floor_time:8.2f}x")


if __name__ == "__main__":
    main()
