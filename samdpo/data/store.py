"""The prepared 2D sample store that later rules read.

A store is a folder with three files:

- ``images.npy``: (N, S, S) uint8, the windowed / normalised image times 255 (memory-mapped on read);
- ``labels.npy``: (N, S, S) uint8 label maps (0 = background, k = ``class_names[k-1]``); absent from
  an unlabelled store (the images ``samdpo segment`` is given), whose metadata says ``labelled: false``;
- ``samples.parquet``: one row per sample (``index`` into the arrays, ``sample_id``, ``case_id``,
  ``slice_index``, ``slice_count`` (axial slices of the sample's volume), ``group``, ``source``,
  ``spacing_row``, ``spacing_col``, ``orig_height``, ``orig_width``), with ``kind``, ``class_names``,
  ``image_size``, ``spacing_unit`` and ``labelled`` in the Parquet schema metadata.

Ground truth lives only in ``labels.npy``: the sample table carries nothing derived from it, so code
that must not see labels (prompts, candidates) never has to open that file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from samdpo import atomic
from samdpo.data.sample import Sample
from samdpo.errors import DataError

IMAGES, LABELS, TABLE = "images.npy", "labels.npy", "samples.parquet"


class _NpyStream:
    """Append (S, S) uint8 frames to a raw file, then wrap them in an ``.npy`` header: O(1) memory."""

    def __init__(self, path: Path) -> None:
        self.raw = path.with_name(f".{path.name}.raw")
        self.handle = self.raw.open("wb")
        self.count = 0
        self.frame_shape: tuple[int, ...] | None = None

    def append(self, frame: np.ndarray) -> None:
        self.frame_shape = self.frame_shape or frame.shape
        self.handle.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.count += 1

    def finish(self, tmp: Path) -> None:
        self.handle.close()
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *(self.frame_shape or (0, 0)))}
        with tmp.open("wb") as out, self.raw.open("rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            while chunk := raw.read(1 << 24):
                out.write(chunk)

    def discard(self) -> None:
        self.handle.close()
        self.raw.unlink(missing_ok=True)


def write_store(
    samples: Iterable[Sample], folder: Path, kind: str, image_size: int, progress: bool = True, labelled: bool = True
) -> int:
    """Write samples into a store folder; each file appears only once complete.

    Args:
        samples: the reader's samples, all of size (image_size, image_size).
        folder: output folder (created).
        kind: dataset kind, recorded in the metadata.
        image_size: side of the stored images, pixels.
        progress: show a progress bar on stderr.
        labelled: the samples carry labels (written to ``labels.npy``); False: every label is None and the
            store has no ``labels.npy``.

    Returns:
        The number of samples written.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    images = _NpyStream(folder / IMAGES)
    labels = _NpyStream(folder / LABELS) if labelled else None
    rows: list[dict] = []
    class_names: tuple[str, ...] = ()
    unit = ""
    try:
        for sample in tqdm(samples, desc=f"prepare {kind}", unit="slice", disable=not progress):
            if (sample.label is None) == labelled:
                raise DataError(f"{sample.source}: sample {sample.sample_id} {'lacks' if labelled else 'has'} a label")
            shapes = {sample.image.shape} | (set() if sample.label is None else {sample.label.shape})
            if shapes != {(image_size, image_size)}:
                raise DataError(f"{sample.source}: sample {sample.sample_id} is not {image_size}x{image_size}")
            if not np.isfinite(sample.image).all():
                raise DataError(f"{sample.source}: sample {sample.sample_id} has NaN or infinite pixels")
            class_names, unit = sample.class_names, sample.spacing_unit
            images.append(np.rint(np.clip(sample.image, 0.0, 1.0) * 255.0))
            if labels is not None:
                labels.append(sample.label)
            rows.append(
                {
                    "index": len(rows),
                    "sample_id": sample.sample_id,
                    "case_id": sample.case_id,
                    "slice_index": sample.slice_index,
                    "slice_count": sample.slice_count,
                    "group": sample.group,
                    "source": sample.source,
                    "spacing_row": sample.spacing[0],
                    "spacing_col": sample.spacing[1],
                    "orig_height": sample.original_shape[0],
                    "orig_width": sample.original_shape[1],
                }
            )
        if not rows:
            raise DataError(f"{kind}: the reader produced no samples (no slice with a target?)")
        table = pa.Table.from_pylist(rows)
        metadata = {
            "kind": kind,
            "class_names": list(class_names),
            "image_size": image_size,
            "spacing_unit": unit,
            "labelled": labelled,
        }
        table = table.replace_schema_metadata({"samdpo": json.dumps(metadata)})
        for stream, name in ((images, IMAGES), (labels, LABELS)):
            if stream is not None:
                with atomic.atomic_path(folder / name) as tmp:
                    stream.finish(tmp)
        with atomic.atomic_path(folder / TABLE) as tmp:
            pq.write_table(table, tmp)
    finally:
        for stream in (images, labels):
            if stream is not None:
                stream.discard()
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a failed first prepare leaves no folder behind
    return len(rows)


class SampleStore:
    """Read access to a prepared store; images are memory-mapped, labels opened only on request."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        path = self.folder / TABLE
        if not path.is_file():
            raise DataError(f"{path}: no prepared sample table; run the prepare rule first")
        try:
            table = pq.read_table(path)
            self.meta = json.loads(table.schema.metadata[b"samdpo"])
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: unreadable sample table ({exc}); run the prepare rule again") from exc
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a samdpo sample table (metadata missing)") from exc
        self.samples: pd.DataFrame = table.to_pandas()
        self._images: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    def __len__(self) -> int:
        return len(self.samples)

    def _array(self, name: str) -> np.ndarray:
        """Memory-map ``name``, checked to be (N, S, S) uint8 for the N samples of the table."""
        path = self.folder / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable store array ({exc}); run the prepare rule again") from exc
        expected = (len(self), self.image_size, self.image_size)
        if array.shape != expected or array.dtype != np.uint8:
            raise DataError(
                f"{path}: holds {array.dtype} {array.shape}, not uint8 {expected} as samples.parquet says; "
                "run the prepare rule again"
            )
        return array

    def images(self) -> np.ndarray:
        """(N, S, S) uint8 memory map of the stored images."""
        if self._images is None:
            self._images = self._array(IMAGES)
        return self._images

    def image(self, index: int) -> np.ndarray:
        """(S, S) float32 image in [0, 1]."""
        return self.images()[index].astype(np.float32) / 255.0

    def labels(self) -> np.ndarray:
        """(N, S, S) uint8 label maps (ground truth: only training on labelled data, the annotator
        and evaluation may call this).

        Raises:
            DataError: an unlabelled store (an image given to ``samdpo segment``).
        """
        if not self.meta.get("labelled", True):
            raise DataError(f"{self.folder}: an unlabelled store (images to segment) has no labels")
        return self._array(LABELS)
