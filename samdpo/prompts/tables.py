"""Parquet prompt tables: atomic writing with provenance metadata, and decoding of the stored blobs.

Blob columns hold (H, W) arrays beside their ``{column}_shape``: ``image`` / ``saliency`` as H * W
uint8 bytes, ``mask`` bit-packed (``np.packbits``, row-major). A blob of another length is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from samdpo import atomic
from samdpo.errors import DataError


def write_table(table: pa.Table, path: Path, meta: Mapping) -> None:
    """Write a prompt table atomically with ``meta`` (settings, provenance) in its schema metadata."""
    table = table.replace_schema_metadata({"samdpo": json.dumps(dict(meta), sort_keys=True)})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def unpack_mask(row: Mapping) -> np.ndarray:
    """The (H, W) bool mask of one table row (a blob of another length than ceil(H * W / 8) bytes is an error)."""
    height, width = row["mask_shape"]
    check_blob(row, "mask")
    return (
        np.unpackbits(np.frombuffer(row["mask"], dtype=np.uint8), count=height * width)
        .reshape(height, width)
        .astype(bool)
    )


def blob_bytes(column: str, shape: tuple[int, int]) -> int:
    """Bytes of a stored (H, W) array: H * W for ``image`` / ``saliency``, ceil(H * W / 8) bit-packed for ``mask``."""
    height, width = shape
    return -(-height * width // 8) if column == "mask" else height * width


def check_blob(row: Mapping, column: str) -> None:
    """Fail unless the row's ``column`` blob holds the bytes its shape needs (a truncated or padded file)."""
    found, expected = len(row[column] or b""), blob_bytes(column, row[f"{column}_shape"])
    if found != expected:
        where = f"sample {row.get('sample_id')}, class {row.get('class_name')}"
        raise DataError(
            f"{where}: the {column} column holds {found} bytes where its shape {list(row[f'{column}_shape'])} needs "
            f"{expected}; the file is damaged, rerun the rule that wrote it"
        )
