"""``samdpo segment``'s recipe, its unlabelled store and its refusals of bad input (each one line naming the
file, nothing written). That it gives the pipeline's own masks is checked on the smoke run (test_workflow)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from samdpo.cli import main
from samdpo.data.sample import Sample
from samdpo.data.store import SampleStore, write_store
from samdpo.errors import DataError
from samdpo.sam.specs import resolve_sam
from samdpo.segment.images import read_image
from samdpo.segment.recipe import read_recipe, write_recipe
from tests.prepared_store import prepare_store

SIZE = 32
SETTINGS = {
    "reader": {},
    "prompts": {},
    "modality": "abdominal CT",
    "saliency": {},
    "crf": {},
    "boxes": {},
    "refine": {},
    "sam": {"name": "small"},
    "vqa": {},
    "llm": {},
    "saliency_size": SIZE,
    "predict": {},
    "threshold": 0.5,
    "answer_cache": "prompts_cache/answers",
}


def _model(folder: Path, settings_hash: str = "abc", sam: dict | None = None) -> Path:
    """A model folder's settings.json (what the recipe checks; no weights: every refusal comes before them)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "sam": sam or json.loads(json.dumps(resolve_sam({"name": "small"}, SIZE))),
        "clip": "local-dir:clip",
        "settings_hash": settings_hash,
    }
    (folder / "settings.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="module")
def amos_store(amos_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_store("amos", amos_root, tmp_path_factory.mktemp("segment") / "store", SIZE)


@pytest.fixture()
def amos_model(amos_store: Path, tmp_path: Path) -> Path:
    model = _model(tmp_path / "model")
    write_recipe(model, amos_store, SETTINGS, "local-dir:clip", None, None, None, model / "recipe")
    return model


def _segment(model: Path, image: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()  # what the set-up printed
    code = main(["segment", "--model", str(model), "--image", str(image), "--out", str(out), "--no-progress"])
    assert code == 2 and not out.exists()
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def test_an_unlabelled_store_has_no_labels_to_read(tmp_path: Path) -> None:
    image = np.full((SIZE, SIZE), 0.5, np.float32)
    sample = Sample("new_z000", "new", 0, image, None, (1.0, 1.0), "mm", ("liver",), "segment", "new.nii.gz", (64, 64))
    write_store([sample], tmp_path / "store", "amos", SIZE, progress=False, labelled=False)
    store = SampleStore(tmp_path / "store")
    assert store.images().shape == (1, SIZE, SIZE) and not (tmp_path / "store/labels.npy").exists()
    with pytest.raises(DataError, match="unlabelled store"):
        store.labels()
    with pytest.raises(DataError, match="has a label"):
        write_store([sample.__class__(**{**vars(sample), "label": np.zeros((SIZE, SIZE), np.uint8)})], tmp_path / "x",
                    "amos", SIZE, progress=False, labelled=False)  # fmt: skip


def test_a_scan_is_read_slice_by_slice_without_labels_as_the_reader_reads_it(
    amos_root: Path, amos_store: Path, amos_model: Path
) -> None:
    """Every axial slice of a scan, the stored (foreground) ones pixel for pixel as the AMOS reader stored them."""
    store = SampleStore(amos_store)
    case = store.samples["case_id"].iloc[0]
    rows = store.samples[store.samples["case_id"] == case]
    samples = read_image(read_recipe(amos_model), amos_root / rows["source"].iloc[0])
    assert len(samples) == int(rows["slice_count"].iloc[0]) and all(s.label is None for s in samples)
    for index, z in zip(rows["index"], rows["slice_index"]):
        stored = np.rint(np.clip(samples[z].image, 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(stored, store.images()[index])
        assert samples[z].slice_count == int(rows["slice_count"].iloc[0])


def test_the_recipe_must_be_the_models(amos_store: Path, amos_model: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), -1000, np.int16), np.eye(4)), image)
    _model(tmp_path / "bare")
    assert "no prompt recipe" in _segment(tmp_path / "bare", image, tmp_path / "a.nii.gz", capsys)
    other = _model(tmp_path / "other", settings_hash="def")  # another model (another dataset's, say)
    write_recipe(amos_model, amos_store, SETTINGS, "local-dir:clip", None, None, None, other / "recipe")
    error = _segment(other, image, tmp_path / "b.nii.gz", capsys)
    assert "written for another model" in error and str(other / "recipe" / "recipe.json") in error
    sam = {**json.loads((amos_model / "settings.json").read_text())["sam"], "name": "lite_medsam"}
    moved = _model(tmp_path / "moved", sam=sam)
    write_recipe(amos_model, amos_store, SETTINGS, "local-dir:clip", None, None, None, moved / "recipe")
    assert "on the SAM small, but" in _segment(moved, image, tmp_path / "c.nii.gz", capsys)
    recipe = json.loads((amos_model / "recipe/recipe.json").read_text())
    (amos_model / "recipe/recipe.json").write_text(json.dumps({k: v for k, v in recipe.items() if k != "crf"}))
    assert "incomplete recipe (missing ['crf'])" in _segment(amos_model, image, tmp_path / "d.nii.gz", capsys)


def test_bad_images_are_refused_by_name_and_nothing_is_written(amos_model: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "slice.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert "a 2D image; the model in" in _segment(amos_model, png, tmp_path / "a.nii.gz", capsys)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 not a nifti")
    error = _segment(amos_model, corrupt, tmp_path / "b.nii.gz", capsys)
    assert str(corrupt) in error and "unreadable" in error
    mri = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(0, 900, (8, 8, 4)).astype(np.float32), np.eye(4)), mri)
    assert "not a CT scan in Hounsfield units" in _segment(amos_model, mri, tmp_path / "c.nii.gz", capsys)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8), -1000, np.int16), np.eye(4)), flat)
    assert "expected a 3D volume" in _segment(amos_model, flat, tmp_path / "d.nii.gz", capsys)
    assert "the input's own format" in _segment(amos_model, mri, tmp_path / "e.png", capsys)
    assert "the input's own format" in _segment(amos_model, mri, tmp_path / "e.nii", capsys)  # written gzipped
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4)), nan)
    assert f"{nan}: the scan has NaN" in _segment(amos_model, nan, tmp_path / "g.nii.gz", capsys)
    assert "no such file" in _segment(amos_model, tmp_path / "absent.nii.gz", tmp_path / "f.nii.gz", capsys)


def test_a_2d_model_refuses_a_volume(busi_root: Path, tmp_path: Path, capsys) -> None:
    store = prepare_store("busi", busi_root, tmp_path / "store", SIZE)
    model = _model(tmp_path / "model")
    settings = {**SETTINGS, "modality": "breast ultrasound"}
    write_recipe(model, store, settings, "local-dir:clip", None, None, None, model / "recipe")
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), -1000, np.int16), np.eye(4)), scan)
    error = _segment(model, scan, tmp_path / "out.png", capsys)
    assert error.startswith(f"samdpo: error: {scan}: a volume; the model in {model} segments busi (tumor)")


def test_a_recipe_names_what_does_not_match_the_model(amos_store: Path, tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    with pytest.raises(Exception, match="trained with the CLIP local-dir:clip, not hf-hub:x/y"):
        write_recipe(model, amos_store, SETTINGS, "hf-hub:x/y", None, None, None, model / "recipe")
    with pytest.raises(Exception, match="trained on the SAM"):
        write_recipe(model, amos_store, {**SETTINGS, "sam": {"name": "small", "encoder_depth": 3}}, "local-dir:clip",
                     None, None, None, model / "recipe")  # fmt: skip
    with pytest.raises(Exception, match=r"crf\.\w+: unknown setting"):
        write_recipe(model, amos_store, {**SETTINGS, "crf": {"nonsense": 1}}, "local-dir:clip", None, None, None,
                     model / "recipe")  # fmt: skip
    assert not (model / "recipe").exists()
