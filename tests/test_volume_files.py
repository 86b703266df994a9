"""Label volumes on each test scan's own grid (``samdpo volumes``) and the 3D metrics read off them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from samdpo.cli import main
from samdpo.data.splits import read_splits
from samdpo.data.store import SampleStore
from samdpo.errors import DataError
from samdpo.evaluation.volume_files import score_volume, slice_label_maps
from samdpo.predictions import write_predictions
from samdpo.synth import amos
from tests.prepared_store import prepare_store


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight AMOS phantoms of 48 x 48 x ~12 voxels, stored in four orientations (LPS, RAS, PLS, LAI by turns)."""
    root = tmp_path_factory.mktemp("amos_volumes")
    amos.write(root, 8, seed=5, settings=amos.AmosSynthSettings(size=48, slices=12))
    return root


def _oracle_predictions(store_dir: Path, splits: Path, out: Path) -> Path:
    """probs.npy of every test slice: 255 on its ground-truth label of each class, 0 elsewhere."""
    store = SampleStore(store_dir)
    assignment = read_splits(splits)
    indices = [i for i, case in enumerate(store.samples["case_id"]) if assignment[case] == "test"]
    labels = store.labels()[indices]

    def fill(probs: np.ndarray) -> None:
        for t in range(len(store.class_names)):
            probs[:, t] = np.where(labels == t + 1, 255, 0)

    write_predictions(out, store, indices, splits, ["test"], out, "oracle", fill)
    return out


def _volumes(store: Path, splits: Path, probs: Path, root: Path, out: Path) -> list[str]:
    return ["volumes", "--store", str(store), "--splits", str(splits), "--probs", str(probs), "--root", str(root),
            "--out", str(out), "--no-progress"]  # fmt: skip


def _prepared(phantoms: Path, tmp_path: Path, size: int) -> tuple[Path, Path]:
    store = prepare_store("amos", phantoms, tmp_path / "store", size)
    splits = tmp_path / "splits.csv"
    split = ["data", "split", "--store", str(store), "--out", str(splits), "--labeled", "0.1", "--unlabeled", "0.1"]
    assert main(split) == 0
    return store, splits


def test_label_volumes_are_on_each_scans_grid_and_affine_whatever_its_orientation(
    phantoms: Path, tmp_path: Path
) -> None:
    """Perfect slice predictions at the scans' own size give back each test case's label file voxel for voxel,
    with its affine and shape, in flipped and permuted orientations alike; the metrics read off the files
    are then Dice 100, NSD 100 and HD95 0 for every organ."""
    store, splits = _prepared(phantoms, tmp_path, 48)
    probs = _oracle_predictions(store, splits, tmp_path / "oracle")
    assert main(_volumes(store, splits, probs, phantoms, tmp_path / "volumes")) == 0
    test_cases = sorted(case for case, split in read_splits(splits).items() if split == "test")
    written = sorted(p.name for p in (tmp_path / "volumes").glob("*.nii.gz"))
    assert written == [f"{case}.nii.gz" for case in test_cases]
    orientations = set()
    for case in test_cases:
        subset = "Va" if (phantoms / "imagesVa" / f"{case}.nii.gz").is_file() else "Tr"
        image = nib.load(str(phantoms / f"images{subset}" / f"{case}.nii.gz"))
        label = nib.load(str(phantoms / f"labels{subset}" / f"{case}.nii.gz"))
        volume = nib.load(str(tmp_path / "volumes" / f"{case}.nii.gz"))
        assert volume.shape == image.shape and np.allclose(volume.affine, image.affine)
        assert volume.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(volume.dataobj), np.asanyarray(label.dataobj))
        orientations.add(nib.aff2axcodes(image.affine))
    assert {("P", "L", "S"), ("L", "A", "I")} <= orientations  # permuted axes, flipped axes
    summary = json.loads((tmp_path / "volumes" / "summary.json").read_text())
    assert summary["volumes"] == len(test_cases)
    assert summary["mdice_3d"] == 100.0 and summary["nsd_3d"] == 100.0 and summary["hd95_3d"] == 0.0
    table = pd.read_csv(tmp_path / "volumes" / "volumes.csv")
    assert set(table["case_id"]) == set(test_cases) and (table["true_voxels"] == table["pred_voxels"]).all()


def test_a_store_smaller_than_the_scans_still_writes_the_scans_grid(phantoms: Path, tmp_path: Path) -> None:
    """At 32 px the slices are resized back to 48 x 48 (nearest neighbour): same affine and shape, the large
    organs where the labels are (the 2-4 voxel adrenals and aorta of these phantoms lose most to the round trip)."""
    store, splits = _prepared(phantoms, tmp_path, 32)
    probs = _oracle_predictions(store, splits, tmp_path / "oracle")
    assert main(_volumes(store, splits, probs, phantoms, tmp_path / "volumes")) == 0
    summary = json.loads((tmp_path / "volumes" / "summary.json").read_text())
    assert 60.0 < summary["mdice_3d"] < 100.0 and summary["dice_3d_per_class"]["liver"] > 90.0
    for path in (tmp_path / "volumes").glob("*.nii.gz"):
        image = nib.load(str(next(phantoms.glob(f"images*/{path.name}"))))
        assert nib.load(str(path)).shape == image.shape


def test_bad_inputs_name_the_file_and_write_nothing(phantoms: Path, tmp_path: Path, busi_root: Path, capsys) -> None:
    store, splits = _prepared(phantoms, tmp_path, 32)
    probs = _oracle_predictions(store, splits, tmp_path / "oracle")
    other = tmp_path / "other_root"
    amos.write(other, 2, seed=9, settings=amos.AmosSynthSettings(size=16, slices=4))
    assert main(_volumes(store, splits, probs, other, tmp_path / "volumes")) != 0
    assert "no image of test case" in capsys.readouterr().err and not (tmp_path / "volumes").exists()
    resized = tmp_path / "resized_root"  # the same case ids at another size: not the scans the store holds
    amos.write(resized, 8, seed=5, settings=amos.AmosSynthSettings(size=40, slices=12))
    assert main(_volumes(store, splits, probs, resized, tmp_path / "volumes")) != 0
    assert "but the store holds" in capsys.readouterr().err and not (tmp_path / "volumes").exists()
    partial = tmp_path / "partial"
    meta = json.loads((probs / "probs.json").read_text())
    dropped = min(sample.rsplit("_z", 1)[0] for sample in meta["sample_ids"])  # one test case's slices left out
    keep = [i for i, sample in enumerate(meta["sample_ids"]) if not sample.startswith(f"{dropped}_z")]
    partial.mkdir()
    np.save(partial / "probs.npy", np.load(probs / "probs.npy")[keep])
    ids = [meta["sample_ids"][i] for i in keep]
    splits_of = [meta["sample_splits"][i] for i in keep]
    (partial / "probs.json").write_text(json.dumps({**meta, "sample_ids": ids, "sample_splits": splits_of}))
    assert main(_volumes(store, splits, partial, phantoms, tmp_path / "volumes")) != 0
    assert "a volume needs every test case" in capsys.readouterr().err and not (tmp_path / "volumes").exists()
    busi = prepare_store("busi", busi_root, tmp_path / "busi", 32)
    assert main(_volumes(busi, splits, probs, phantoms, tmp_path / "volumes")) != 0
    assert "AMOS (3D) stores only" in capsys.readouterr().err and not (tmp_path / "volumes").exists()


def test_slice_label_maps_take_the_most_likely_class_above_the_threshold() -> None:
    probs = np.zeros((1, 3, 1, 4), np.uint8)
    probs[0, :, 0, 0] = [200, 250, 10]  # two above 128: the higher wins
    probs[0, :, 0, 1] = [100, 90, 127]  # none reaches 128
    probs[0, 2, 0, 2] = 128
    assert slice_label_maps(probs, 128).tolist() == [[[2, 0, 3, 0]]]


def test_3d_metrics_of_a_shifted_cube_in_anisotropic_voxels() -> None:
    """A 4^3 cube predicted one voxel off along the 5 mm axis: Dice 75, HD95 5 mm (the shifted faces), NSD at
    2 mm tolerance below 100; an organ predicted where the labels lack it is a false-positive volume; an organ
    not predicted gets Dice 0, NSD 0, HD95 NaN."""
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    truth[0, 0, 0] = 3
    pred = np.zeros_like(truth)
    pred[2:6, 2:6, 3:7] = 1
    pred[7, 7, 7] = 2
    rows, false_positives = score_volume(pred, truth, (1.0, 1.0, 5.0), ("a", "b", "c"), 2.0)
    first, missed = rows
    assert first["class_name"] == "a" and first["dice"] == pytest.approx(75.0)
    assert first["hd95"] == pytest.approx(5.0) and 0.0 < first["nsd"] < 100.0
    assert missed["class_name"] == "c" and missed["dice"] == 0.0 and missed["nsd"] == 0.0 and math.isnan(missed["hd95"])
    assert false_positives == ["b"]
    with pytest.raises(DataError, match="differ in shape"):
        score_volume(pred[:4], truth, (1.0, 1.0, 1.0), ("a",), 2.0)
