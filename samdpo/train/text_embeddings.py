"""CLIP text embeddings of the text prompts, computed once per dataset and stored as Parquet.

Each (image, class) carries two texts: its VQA answers joined into one sentence and its class's
LLM description. The frozen CLIP text tower (the dataset's CLIP: BiomedCLIP's PubMedBERT, or the
small CLIP's MiniLM) embeds every distinct text once; training and prediction look texts up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from samdpo import atomic
from samdpo.errors import DataError


def vqa_text(answers: Iterable[Mapping[str, str]]) -> str:
    """One sentence of VQA answers: ``"shape: oval, medium (2.5% of the image); location: ..."``."""
    return "; ".join(f"{qa['question_id']}: {qa['answer']}" for qa in answers)


def embed_texts(clip: Any, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(U, D) float32 L2-normalised embeddings of ``texts`` by ``clip.model.encode_text``."""
    import torch

    chunks = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="embed texts", unit="batch", disable=not progress):
            tokens = clip.tokenizer(texts[start : start + batch_size])
            chunks.append(torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1).numpy())
    if not chunks:
        raise DataError("no texts to embed (an empty prompt store?)")
    return np.concatenate(chunks)


def write_text_embeddings(path: Path, texts: list[str], embeddings: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write ``text`` and its ``embedding`` per row atomically, with ``meta`` (CLIP id, dim) in the metadata."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.astype(np.float32).ravel()), embeddings.shape[1])
    table = pa.table({"text": pa.array(texts, pa.string()), "embedding": column})
    table = table.replace_schema_metadata({"samdpo": json.dumps(dict(meta), sort_keys=True)})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_text_embeddings(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Text -> (D,) float32 embedding, and the file's metadata."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no text embeddings; run the embed_texts rule first")
    table = pq.read_table(path)
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32)
    vectors = vectors.reshape(table.num_rows, -1)
    lookup = dict(zip(table.column("text").to_pylist(), vectors))
    return lookup, json.loads(table.schema.metadata[b"samdpo"])
