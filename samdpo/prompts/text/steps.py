"""The work of ``samdpo prompts vqa | llm``: ask every question (or reuse the answer cache) and write
the answers' table with its provenance (backend, model, settings and their hash, questions asked)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from samdpo.errors import DataError
from samdpo.fingerprint import spec_hash


def crf_masks(crf_path: Path | str) -> dict[tuple[str, int], Any]:
    """(sample id, class index) -> (S, S) bool CRF mask of a crf.parquet (the geometry VQA backend's input)."""
    import pyarrow.parquet as pq

    from samdpo.prompts.tables import unpack_mask

    if not Path(crf_path).is_file():
        raise DataError(f"{crf_path}: no CRF prompt table; run the crf rule first")
    rows = pq.read_table(crf_path, columns=["sample_id", "class_index", "mask", "mask_shape"]).to_pylist()
    return {(row["sample_id"], row["class_index"]): unpack_mask(row) for row in rows}


def answer_settings(settings: Any, modality: str) -> dict[str, Any]:
    """The settings that decide the answers (provenance and settings hash); ``openai.workers`` does not."""
    used = {key: value for key, value in vars(settings).items() if key != "openai"}
    if settings.backend == "openai":
        used["openai"] = {key: value for key, value in settings.openai.items() if key != "workers"}
    return {**used, "modality": modality}


def workers(settings: Any) -> int:
    """Questions in flight: ``openai.workers`` for the openai backend, one otherwise."""
    return int(settings.openai.get("workers", 4)) if settings.backend == "openai" else 1


def write_answers(
    step: str,
    table: Any,
    out: Path | str,
    modality: str,
    dataset: str,
    backend: Any,
    settings: Any,
    cache: Any,
    **extra: Any,
) -> None:
    """Write a VQA / LLM table with its provenance (``extra`` joins the hash) and say what was asked."""
    from samdpo.prompts.tables import write_table

    used = answer_settings(settings, modality)
    meta = {"dataset": dataset, "backend": backend.backend, "model": backend.model, "settings": used, **extra}
    meta |= {
        "settings_hash": spec_hash([backend.model, used, *extra.values()]),
        "asked": cache.asked,
        "reused": cache.reused,
    }
    write_table(table, Path(out), meta)
    print(
        f"{step}: {table.num_rows} answers in {out}; "
        f"questions asked {cache.asked}, answered from the cache {cache.reused}",
        file=sys.stderr,
    )


def run_vqa(
    store_dir: Path | str,
    out: Path | str,
    modality: str,
    settings: Any,
    cache_dir: str,
    crf_path: str | None,
    progress: bool,
) -> None:
    """VQA answers per (image, class); ``settings``: :class:`~samdpo.prompts.text.vqa.VqaSettings`
    (the geometry backend reads the CRF masks of ``crf_path``)."""
    from samdpo.data.store import SampleStore
    from samdpo.prompts.store import table_meta
    from samdpo.prompts.text.answer_cache import AnswerCache
    from samdpo.prompts.text.vqa import make_backend, make_questions, vqa_table

    store = SampleStore(Path(store_dir))
    geometry = settings.backend == "geometry"
    backend = make_backend(settings, crf_masks(crf_path) if geometry and crf_path else None)
    questions = make_questions(list(store.samples["sample_id"]), list(store.class_names), settings.questions, modality)
    with AnswerCache(cache_dir) as cache:
        table = vqa_table(store.images(), questions, backend, cache, workers=workers(settings), progress=progress)
        visual = table_meta(Path(crf_path))["settings_hash"] if geometry else None
        write_answers("vqa", table, out, modality, store.kind, backend, settings, cache, visual_settings_hash=visual)


def run_llm(
    store_dir: Path | str, out: Path | str, modality: str, settings: Any, cache_dir: str, progress: bool
) -> None:
    """An LLM description per class; ``settings``: :class:`~samdpo.prompts.text.llm.LlmSettings`."""
    from samdpo.data.store import SampleStore
    from samdpo.prompts.text.answer_cache import AnswerCache
    from samdpo.prompts.text.llm import llm_table, make_backend, make_requests

    store = SampleStore(Path(store_dir))
    backend = make_backend(settings)
    requests = make_requests(list(store.class_names), modality, settings.prompt)
    with AnswerCache(cache_dir) as cache:
        table = llm_table(requests, backend, cache, workers=workers(settings), progress=progress)
        write_answers("llm", table, out, modality, store.kind, backend, settings, cache)
