"""Benchmark: LiteMedSAM's frozen inference in torch eager against the engine (``sam.engine: onnxruntime``),
side by side in one process, and where a finished run's time went.

Per image: the image encoder (preprocessed 256 px input -> (256, 64, 64)). Per prompt: the prompt
encoder + mask decoder for K box prompts on one cached embedding, K = 1 called K times (unbatched)
and all K classes of the image in one call (batched, as every inference job runs it). Both paths go
through :class:`samdpo.sam.prompted.PromptedSam`, so the engine's rows include the same torch-side
prompt tokens and resizing as the rules pay. With ``openvino`` installed, its float32 CPU plugin is
timed on the same exported graphs too (the engine choice: ``samdpo.sam.engine``). The maximum
absolute logit difference from torch is printed beside each row.

Then, with ``--benchmarks DIR`` (a finished run's ``results/benchmarks``), the table of job seconds by
rule (``benchmarks/rule_times.py``) that the README's "Where the time goes" shows.
Run: ``python benchmarks/engine_benchmark.py [--images 8] [--prompts 15] [--threads 1]
[--benchmarks results/benchmarks]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from samdpo.sam.engine import attach_engine
from samdpo.sam.prompted import box_batch
from samdpo.sam.specs import build_model

sys.path.insert(0, str(Path(__file__).parent))
from rule_times import read_benchmarks, summarise  # noqa: E402


def _seconds(run: Callable[[], object], repeats: int) -> float:
    """Mean wall seconds of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    began = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - began) / repeats


def _openvino_rows(cache: Path, inputs: np.ndarray, embedding: np.ndarray, sparse: np.ndarray, threads: int) -> dict:
    """Seconds of OpenVINO's float32 CPU plugin on the engine's exported graphs (empty without openvino)."""
    try:
        import openvino
    except ModuleNotFoundError:
        return {}
    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    encoder = core.compile_model(str(next(cache.glob("encoder-*.onnx"))), "CPU", config)
    decoder = core.compile_model(str(next(cache.glob("decoder-*.onnx"))), "CPU", config)
    return {
        "encoder": lambda: encoder({"image": inputs}),
        "decoder": lambda: decoder({"embedding": embedding, "sparse": sparse}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="encoder runs per path")
    parser.add_argument("--prompts", type=int, default=15, help="box prompts on one image (AMOS: 15 classes)")
    parser.add_argument("--repeats", type=int, default=5, help="decoder calls per path")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the rules run one)")
    parser.add_argument("--benchmarks", type=Path, default=None, help="a run's results/benchmarks folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sam = {"name": "lite_medsam", "image_size": 256}
    box_only = {"box": True, "points": False, "vqa": False, "llm": False}
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, size=(1, 128, 128), dtype=np.uint8))
    x = np.sort(rng.uniform(0, 127, size=(args.prompts, 2)), axis=1)
    y = np.sort(rng.uniform(0, 127, size=(args.prompts, 2)), axis=1)
    corners = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)  # XYXY
    boxes = box_batch(corners, 128)
    singles = [box_batch(corners[k : k + 1], 128) for k in range(args.prompts)]
    rows, outputs, models = [], {}, {}
    with tempfile.TemporaryDirectory() as cache, torch.inference_mode():
        for engine in ("torch", "onnxruntime"):
            model = attach_engine(
                build_model(sam, 1, box_only, 0).eval(), {**sam, "engine": engine, "engine_cache": cache}
            )
            embedding = model.embed_images(images)
            per_image = _seconds(lambda: model.embed_images(images), args.images)
            batched = _seconds(lambda: model(embedding, boxes), args.repeats) / args.prompts
            unbatched = _seconds(lambda: [model(embedding, one) for one in singles], max(1, args.repeats // 2))
            outputs[engine] = (embedding, model(embedding, boxes)[0])
            models[engine] = model
            rows.append((engine, per_image, unbatched / args.prompts, batched))
        inputs = models["torch"].preprocess(images).numpy()
        sparse = models["torch"].sparse_tokens(boxes).numpy()
        openvino = _openvino_rows(Path(cache), inputs, outputs["torch"][0].numpy(), sparse, args.threads)
        if openvino:
            rows.append(
                (
                    "openvino (float32, graphs only)",
                    _seconds(openvino["encoder"], args.images),
                    float("nan"),
                    _seconds(openvino["decoder"], args.repeats) / args.prompts,
                )
            )
    torch_row = rows[0]
    print(f"LiteMedSAM, {args.threads} thread(s), {args.prompts} box prompts per image, 128 px images\n")
    print(
        "| path | encoder ms / image | decoder ms / prompt, unbatched | decoder ms / prompt, batched | max logit diff |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, *times in rows:
        ratios = [f"{1e3 * t:.1f} ({base / t:.2f}x)" if t == t else "n/a" for t, base in zip(times, torch_row[1:])]
        diff = f"{(outputs[name][1] - outputs['torch'][1]).abs().max().item():.1e}" if name in outputs else "n/a"
        print(f"| {name} | {' | '.join(ratios)} | {diff} |")
    if args.benchmarks is not None:
        table = summarise(read_benchmarks(args.benchmarks))
        print(f"\nJob seconds by rule ({args.benchmarks}):\n")
        print(table.to_markdown(index=False))
        print(f"\n{int(table['jobs'].sum())} jobs, {table['wall_s'].sum():.0f} s of job wall time in all")


if __name__ == "__main__":
    main()
