"""The work of ``samdpo prompts store``."""

from __future__ import annotations

import time
from pathlib import Path


def run_store(
    store_dir: Path | str,
    saliency_dir: Path | str,
    crf: Path | str,
    vqa: Path | str,
    llm: Path | str,
    out: Path | str,
    saliency_size: int | None,
    progress: bool,
) -> str:
    """Merge every prompt of every image into one Parquet file per image in ``out``."""
    from samdpo.data.store import SampleStore
    from samdpo.prompts.store import merge_prompt_store
    from samdpo.prompts.visual.saliency_files import read_saliency

    store = SampleStore(Path(store_dir))
    start = time.perf_counter()
    ids, names = list(store.samples["sample_id"]), list(store.class_names)
    saliency = read_saliency(Path(saliency_dir))
    report = merge_prompt_store(
        store.images(),
        ids,
        names,
        store.kind,
        saliency,
        Path(crf),
        Path(vqa),
        Path(llm),
        Path(out),
        saliency_size=saliency_size,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    return (
        f"prompt store: {report.images} files, {report.rows} rows, "
        f"{report.bytes / report.images / 1024:.1f} KiB per image, {report.images / seconds:.0f} images/s, in {out}"
    )
