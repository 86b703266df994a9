"""U-Net baseline data for tests: 16 synthetic cases (4 labelled, 6 unlabelled, 2 validation, 4 test; a bright
in a sample store with their splits (the module-scoped fixture ``data``), and fast settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.baselines.unet_settings import UnetSettings
from samdpo.data.sample import Sample
from samdpo.data.splits import write_splits
from samdpo.data.store import SampleStore, write_store

SIZE, CASES = 32, 16
CLASSES = ("square", "disk")
SPLIT = {
    f"case{i:02d}": "labeled" if i < 4 else "unlabeled" if i < 10 else "validation" if i < 12 else "test"
    for i in range(CASES)
}
#: Labels of the test split hold an impossible class: training fails if it ever reads them.
POISON = 9
FAST = UnetSettings(
    channels=(8, 16, 32), strides=(2, 2), num_res_units=1, epochs=2, lr=1e-2, batch_size=4, device="cpu"
)


def case_arrays(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, label map and the square's mask: a bright square (class 1) left, a grey disk (class 2) right."""
    rng = np.random.default_rng(i)
    image = 0.1 + 0.05 * rng.random((SIZE, SIZE))
    label = np.zeros((SIZE, SIZE), np.uint8)
    side = int(rng.integers(6, 11))
    r, c = int(rng.integers(2, SIZE - side - 2)), int(rng.integers(1, 14 - side + 8))
    square = np.zeros((SIZE, SIZE), bool)
    square[r : r + side, c : c + side] = True
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radius = int(rng.integers(3, 6))
    disk = (yy - int(rng.integers(8, 24))) ** 2 + (xx - int(rng.integers(22, 27))) ** 2 <= radius**2
    image[square], image[disk] = 0.95, 0.5
    label[square], label[disk] = 1, 2
    if SPLIT[f"case{i:02d}"] == "test":
        label[:] = POISON
    return image.astype(np.float32), label, square


def _sample(i: int) -> Sample:
    """Case ``i`` as a sample of the ``synthetic`` dataset."""
    image, label, _ = case_arrays(i)
    return Sample(
        f"s{i:02d}",
        f"case{i:02d}",
        0,
        image,
        label,
        (1.0, 1.0),
        "px",
        CLASSES,
        "synthetic",
        f"s{i:02d}.png",
        (SIZE, SIZE),
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sample store of every case and its splits file (``SPLIT``): (store folder, splits.csv)."""
    root = tmp_path_factory.mktemp("unet")
    write_store((_sample(i) for i in range(CASES)), root / "store", "synthetic", SIZE, progress=False)
    write_splits(SPLIT, root / "splits.csv")
    return root / "store", root / "splits.csv"


def train_images(store: Path, splits: tuple[str, ...] = ("labeled", "unlabeled")) -> tuple[np.ndarray, np.ndarray]:
    """The images and label maps of the cases in ``splits``, read from ``store``."""
    chosen = [i for i in range(CASES) if SPLIT[f"case{i:02d}"] in splits]
    opened = SampleStore(store)
    return np.asarray(opened.images()[chosen]), np.asarray(opened.labels()[chosen])


@pytest.fixture(autouse=True)
def one_thread():
    """One thread (fast on a busy machine; the commands set it too), and the process's count restored after
    (autouse in the modules that import it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def selection_data(data: tuple[Path, Path]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(training images, labels) of the labelled + unlabelled cases and (images, labels) of the validation ones."""
    return train_images(data[0]), train_images(data[0], ("validation",))
