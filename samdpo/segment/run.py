"""``samdpo segment``: a trained (or aligned) model folder and a new image -> its masks, with no store, no labels
and no Snakemake.

The image becomes an unlabelled sample store in a temporary folder, and the prompt steps of the pipeline run on it
with the model's recipe (:mod:`samdpo.segment.recipe`): CLIP + gScoreCAM saliency, the dense CRF weighed by the
anatomical prior, the SAM refinement, the VQA answers and LLM descriptions, the prompt store gated by the presence
signal, the CLIP text embeddings; then the model predicts as its ``predict`` section says and the masks are written
in the input's format (:mod:`samdpo.segment.images`). The same code as the rules makes the same prompts, so a
slice the pipeline stored gets the mask the pipeline predicts for it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from samdpo.errors import ConfigError

#: The steps, as the progress lines name them.
STEPS = ("read", "saliency", "CRF boxes", "SAM refinement", "VQA", "LLM", "prompt store", "text embeddings", "predict")


def _say(step: str, progress: bool) -> None:
    if progress:
        print(f"segment [{STEPS.index(step) + 1}/{len(STEPS)}] {step}", file=sys.stderr)


def encoder_frozen(spec: dict) -> bool:
    """Whether a model (its ``settings.json`` spec) left the SAM image encoder as pretrained, so that it predicts
    from the frozen encoder's stored embeddings as the pipeline does."""
    return not {"image_encoder", "adapters"} & set(spec["stage1"]["train"])


def run_segment(
    model_dir: Path | str,
    image: Path | str,
    out: Path | str,
    cache_dir: str | None,
    device_name: str,
    workers: int,
    progress: bool,
) -> str:
    """Segment ``image`` with the model in ``model_dir`` into ``out``; returns the line the command prints.
    ``cache_dir``: the VQA / LLM answer cache (None: the run's ``answer_cache``, relative to the current folder).

    Raises:
        DataError: a missing or foreign recipe, an image of the wrong kind or modality, a corrupt file (nothing
            is written to ``out``).
    """
    from samdpo.data.store import write_store
    from samdpo.devices import pick_device
    from samdpo.prompts.steps import run_store
    from samdpo.prompts.text.steps import run_llm, run_vqa
    from samdpo.prompts.visual.steps import run_crf, run_refine, run_saliency
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.segment.images import check_paths, read_image, write_masks
    from samdpo.segment.recipe import read_recipe
    from samdpo.train.steps import (
        embed_store_images,
        embed_store_texts,
        load_trained_model,
        predict_into,
        store_prompts,
    )
    from samdpo.train.text_embeddings import read_text_embeddings

    model_dir, image, out = Path(model_dir), Path(image), Path(out)
    recipe = read_recipe(model_dir)
    check_paths(recipe, model_dir, image, out)
    _say("read", progress)
    samples = read_image(recipe, image)
    refine = recipe.settings("refine")
    cache_dir = cache_dir or str(recipe.values["answer_cache"])
    with tempfile.TemporaryDirectory(prefix="samdpo-segment-") as work:
        tmp = Path(work)
        store_dir, saliency_dir, embeddings_dir = tmp / "store", tmp / "saliency", tmp / "embeddings"
        write_store(samples, store_dir, recipe.kind, recipe.image_size, progress=False, labelled=False)
        model, spec = load_trained_model(model_dir)
        frozen = encoder_frozen(spec)
        if refine.iterations > 0 or frozen:
            embed_store_images(store_dir, recipe.values["sam"], embeddings_dir, progress)
        _say("saliency", progress)
        saliency = recipe.settings("saliency")
        run_saliency(store_dir, saliency_dir, recipe.clip_id, recipe.values["prompts"], saliency, progress)
        _say("CRF boxes", progress)
        prior = str(recipe.prior) if recipe.prior else None
        crf = tmp / "crf.parquet"
        run_crf(store_dir, saliency_dir, crf, recipe.settings("crf"), recipe.values["boxes"], prior, workers, progress)
        visual = crf
        if refine.iterations > 0:
            _say("SAM refinement", progress)
            visual = tmp / "refined.parquet"
            sam, boxes = recipe.values["sam"], recipe.values["boxes"]
            run_refine(store_dir, saliency_dir, str(crf), str(embeddings_dir), sam, boxes, refine, visual, progress)
        _say("VQA", progress)
        vqa_settings, modality = recipe.settings("vqa"), recipe.values["modality"]
        geometry = str(visual) if vqa_settings.backend == "geometry" else None
        run_vqa(store_dir, tmp / "vqa.parquet", modality, vqa_settings, cache_dir, geometry, progress)
        _say("LLM", progress)
        run_llm(store_dir, tmp / "llm.parquet", modality, recipe.settings("llm"), cache_dir, progress)
        _say("prompt store", progress)
        prompts_dir = tmp / "prompts"
        presence = str(recipe.presence) if recipe.presence else None
        given = (store_dir, saliency_dir, visual, tmp / "vqa.parquet", tmp / "llm.parquet", prompts_dir)
        print(run_store(*given, recipe.values["saliency_size"], progress, presence=presence), file=sys.stderr)
        _say("text embeddings", progress)
        embed_store_texts(store_dir, prompts_dir, recipe.clip_id, tmp / "texts.parquet", progress)
        texts, text_meta = read_text_embeddings(tmp / "texts.parquet")
        if text_meta["dim"] != spec["text_dim"]:
            raise ConfigError(f"{recipe.clip_id}: {text_meta['dim']}-dim texts, the model takes {spec['text_dim']}")
        _say("predict", progress)
        store, prompts, indices = store_prompts(store_dir, prompts_dir)
        size = recipe.image_size
        probs = np.zeros((len(indices), len(recipe.class_names), size, size), np.uint8)
        ids = list(store.samples["sample_id"])
        embeddings = load_embeddings(str(embeddings_dir), model, ids) if frozen else None
        predict = recipe.settings("predict")
        images = store.images()
        device = pick_device(device_name)
        predict_into(model, spec, images, prompts, texts, store.samples, predict, device, probs, embeddings, progress)
        found = write_masks(recipe, image, samples, probs, out)
    what = f"{len(samples)} slices" if len(samples) > 1 else "1 image"
    return f"segmented {image} ({what}, {predict.volume}) with {model_dir}: {found}; masks in {out}"
