"""Benchmark: the text-prompt steps and the per-image prompt store, on a dataset the pipeline built.

Measured side by side in one run, on ``results/`` of a finished ``snakemake`` run (default: AMOS):

- the merge into per-image Parquet files: images/s and bytes per image, with the saliency stored
  at the image size and on the default 64 x 64 grid;
- VQA with the openai backend against a local OpenAI-compatible server (127.0.0.1): questions
  asked by a cold run and by a warm rerun (counted, not timed), and both runs' times;
- the geometry VQA backend: questions answered per second.

Run: ``python benchmarks/text_prompts_benchmark.py [--dataset amos] [--images 60]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.openai_server

from samdpo.data.store import SampleStore  # noqa: E402
from samdpo.prompts.store import merge_prompt_store  # noqa: E402
from samdpo.prompts.tables import unpack_mask, write_table  # noqa: E402
from samdpo.prompts.text.answer_cache import AnswerCache  # noqa: E402
from samdpo.prompts.text.llm import KnowledgeLLM, llm_table, make_requests  # noqa: E402
from samdpo.prompts.text.openai_chat import OpenAISettings  # noqa: E402
from samdpo.prompts.text.vqa import OpenAIVQA, VqaSettings, make_backend, make_questions, vqa_table  # noqa: E402
from samdpo.prompts.visual.saliency_files import read_saliency  # noqa: E402
from tests.openai_server import OpenAIServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amos")
    parser.add_argument("--results", default="results")
    parser.add_argument("--images", type=int, default=60, help="images in the openai cold/warm comparison")
    args = parser.parse_args()
    store = SampleStore(Path(args.results) / "data" / "prepared" / args.dataset)
    prompts = Path(args.results) / "prompts" / args.dataset
    ids, classes = list(store.samples["sample_id"]), list(store.class_names)
    saliency = read_saliency(prompts)
    masks_path = prompts / "crf.parquet"

    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the text tables the merge reads: geometry VQA (timed) and knowledge descriptions
        masks = {(r["sample_id"], r["class_index"]): unpack_mask(r) for r in pq.read_table(masks_path).to_pylist()}
        settings = VqaSettings()
        questions = make_questions(ids, classes, settings.questions, "abdominal CT")
        with AnswerCache(tmp / "answers") as cache:
            start = time.perf_counter()
            vqa = vqa_table(store.images(), questions, make_backend(settings, masks), cache, progress=False)
            geometry_rate = len(questions) / (time.perf_counter() - start)
            llm = llm_table(make_requests(classes, "abdominal CT", "{name}"), KnowledgeLLM(), cache, progress=False)
        hashes = {"backend": "geometry", "model": "crf-mask-geometry", "settings_hash": "benchmark"}
        write_table(vqa, tmp / "vqa.parquet", hashes)
        write_table(llm, tmp / "llm.parquet", {**hashes, "backend": "knowledge", "model": "file"})

        rows = []
        for size in (None, 64):
            start = time.perf_counter()
            tables = (masks_path, tmp / "vqa.parquet", tmp / "llm.parquet")
            report = merge_prompt_store(
                store.images(),
                ids,
                classes,
                args.dataset,
                saliency,
                *tables,
                tmp / f"store_{size}",
                size,
                progress=False,
            )
            seconds = time.perf_counter() - start
            rows.append((size or store.image_size, report.images / seconds, report.bytes / report.images))
        print(f"prompt store, {args.dataset}: {len(ids)} images x {len(classes)} classes")
        print(f"{'saliency grid':>14} {'images/s':>9} {'KiB/image':>10}")
        for size, rate, size_bytes in rows:
            print(f"{size:>14} {rate:>9.0f} {size_bytes / 1024:>10.1f}")
        print(f"size ratio (image-size grid / 64 grid): {rows[0][2] / rows[1][2]:.2f}")
        print(f"geometry VQA: {geometry_rate:.0f} questions/s ({len(questions)} questions)")

        os.environ.setdefault("OPENAI_API_KEY", "sk-local-benchmark")
        subset = [q for q in questions if q.image_index < args.images]
        with OpenAIServer() as server:
            backend = OpenAIVQA(
                OpenAISettings(model="local-vision", base_url=server.base_url, backoff_s=0.01, workers=4),
                settings.system,
            )
            runs = []
            for label in ("cold", "warm"):
                with AnswerCache(tmp / "openai_answers") as cache:
                    start = time.perf_counter()
                    vqa_table(store.images(), subset, backend, cache, workers=4, progress=False)
                    runs.append((label, cache.asked, cache.reused, len(server.requests), time.perf_counter() - start))
        print(f"openai VQA against a local server, {len(subset)} questions ({args.images} images):")
        for label, asked, reused, served, seconds in runs:
            print(
                f"  {label}: asked {asked}, from the cache {reused}, server requests so far {served}, {seconds:.2f} s"
            )
        print(f"  warm / cold time: {runs[1][4] / runs[0][4]:.3f}")


if __name__ == "__main__":
    main()
