"""The work of ``samdpo prompts store``."""

from __future__ import annotations

import time
from pathlib import Path

from samdpo.errors import DataError
from samdpo.prompts.store import PresenceGate


def run_store(
    store_dir: Path | str,
    saliency_dir: Path | str,
    crf: Path | str,
    vqa: Path | str,
    llm: Path | str,
    out: Path | str,
    saliency_size: int | None,
    progress: bool,
    presence: Path | str | None = None,
) -> str:
    """Merge every prompt of every image into one Parquet file per image in ``out``; with ``presence``
    (a presence_prior.json), each row also says whether its class is on the slice, and keeps its box only if so."""
    from samdpo.data.store import SampleStore
    from samdpo.prompts.store import merge_prompt_store
    from samdpo.prompts.visual.saliency_files import read_saliency

    store = SampleStore(Path(store_dir))
    start = time.perf_counter()
    ids, names = list(store.samples["sample_id"]), list(store.class_names)
    saliency = read_saliency(Path(saliency_dir))
    gate = None
    if presence:
        from samdpo.prompts.visual.presence import read_presence
        from samdpo.prompts.visual.steps import store_heights

        prior, info = read_presence(Path(presence))
        if list(prior.class_names) != names:
            raise DataError(f"{presence}: fitted for classes {list(prior.class_names)}, not the store's {names}")
        gate = PresenceGate(*prior.decide(store_heights(store, store_dir)), info)
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
        presence=gate,
    )
    seconds = time.perf_counter() - start
    gated = "" if gate is None else f", {int((~gate.present).sum())} (image, class) pairs absent by presence"
    return (
        f"prompt store: {report.images} files, {report.rows} rows, "
        f"{report.bytes / report.images / 1024:.1f} KiB per image, {report.images / seconds:.0f} images/s, "
        f"in {out}{gated}"
    )
