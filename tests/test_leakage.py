"""No ground truth of unlabelled or test images reaches the prompts.

The saliency, CRF, VQA, LLM and prompt-store commands read the sample table and images only:
changing every label, or deleting labels.npy altogether, changes no saliency map, mask, box, point,
VQA answer, description or prompt-store file. The anatomical prior reads the labelled split's labels
only, and the CRF weighted by it and the SAM box refinement read none. Stage 1 trains on the labelled
split's labels only and chooses its epoch on the validation split's (every unlabelled and test label
changed leaves its weights and its choice byte-identical); the U-Net and nnU-Net baselines likewise
(scrambled test labels change neither their weights, their chosen epoch nor nnU-Net's dataset);
prediction, candidates, stage 2, the image embeddings and the zero-shot CRF-box row read none
(stage 2 anchored on the labelled split reads that split's only: its weights are the same bytes
whatever the other labels hold); the oracle row (ground-truth boxes) is refused for any
split but test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from samdpo.cli import main
from tests.prepared_store import prepare_store, save_tiny_clip
from tests.unet_data import SPLIT
from tests.unet_data import data as data  # noqa: F401  (the module-scoped store fixture)


def _prompts(store: Path, clip: Path, out: Path) -> tuple[bytes, object, dict]:
    """Every prompt step, from saliency to the per-image store: saliency bytes, CRF table, text tables and store
    files."""
    args = ["--store", str(store), "--no-progress"]
    assert (
        main(
            [
                "prompts",
                "saliency",
                *args,
                "--out",
                str(out),
                "--clip",
                f"local-dir:{clip}",
                "--settings",
                '{"top_k": 4}',
            ]
        )
        == 0
    )
    crf = ["--crf", '{"sigmoid_center": 0.5}']
    assert main(["prompts", "crf", *args, *crf, "--saliency", str(out), "--out", str(out / "crf.parquet")]) == 0
    text = [*args, "--modality", "breast ultrasound", "--cache", str(out / "answers")]
    assert main(["prompts", "vqa", *text, "--crf", str(out / "crf.parquet"), "--out", str(out / "vqa.parquet")]) == 0
    assert main(["prompts", "llm", *text, "--out", str(out / "llm.parquet")]) == 0
    merged = [
        "--saliency",
        str(out),
        "--crf",
        str(out / "crf.parquet"),
        "--vqa",
        str(out / "vqa.parquet"),
        "--llm",
        str(out / "llm.parquet"),
    ]
    assert main(["prompts", "store", *args, *merged, "--out", str(out / "store")]) == 0
    tables = {name: pq.read_table(out / f"{name}.parquet") for name in ("vqa", "llm")}
    tables |= {f.name: pq.read_table(f) for f in sorted((out / "store").glob("*.parquet"))}
    return (out / "saliency.npy").read_bytes(), pq.read_table(out / "crf.parquet"), tables


def test_changing_or_removing_labels_changes_no_prompt(busi_root: Path, tiny_clip, tmp_path: Path) -> None:
    save_tiny_clip(tiny_clip, tmp_path / "clip")
    store = tmp_path / "store"
    prepare_store("busi", busi_root, store, 64)
    maps_a, table_a, text_a = _prompts(store, tmp_path / "clip", tmp_path / "a")
    assert any(table_a.column("has_box").to_pylist()) and len(text_a) > 2

    labels = np.load(store / "labels.npy")
    rng = np.random.default_rng(0)
    np.save(store / "labels.npy", rng.integers(0, 2, size=labels.shape, dtype=np.uint8))  # every label changed
    maps_b, table_b, text_b = _prompts(store, tmp_path / "clip", tmp_path / "b")
    (store / "labels.npy").unlink()  # and gone altogether
    maps_c, table_c, text_c = _prompts(store, tmp_path / "clip", tmp_path / "c")

    assert maps_a == maps_b == maps_c
    assert table_a.equals(table_b) and table_a.equals(table_c)  # masks, boxes, points, labels of points
    assert text_a.keys() == text_b.keys() == text_c.keys()
    assert all(
        text_a[name].equals(text_b[name]) and text_a[name].equals(text_c[name]) for name in text_a
    )  # answers, descriptions, store
    shutil.rmtree(tmp_path / "a")


def test_stage1_reads_labels_of_the_labelled_split_only(
    busi_root: Path, tiny_clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training sees the labelled split's labels only; prediction, candidates, the prompt-agreement
    annotator and stage 2 read no label at all (only the virtual annotator and evaluation do; stage 2
    anchored on the labelled split reads that split's)."""
    monkeypatch.chdir(tmp_path)  # the SAM engine's default cache, results/engine, is relative to the working folder
    from samdpo.data.splits import read_splits

    save_tiny_clip(tiny_clip, tmp_path / "clip")
    store = tmp_path / "store"
    prepare_store("busi", busi_root, store, 64)
    assert (
        main(
            [
                "data",
                "split",
                "--store",
                str(store),
                "--out",
                str(tmp_path / "splits.csv"),
                "--labeled",
                "0.3",
                "--unlabeled",
                "0.2",
            ]
        )
        == 0
    )
    _prompts(store, tmp_path / "clip", tmp_path / "p")
    texts = tmp_path / "texts.parquet"
    common = ["--store", str(store), "--no-progress"]
    assert (
        main(
            [
                "train",
                "embed-texts",
                *common,
                "--prompts",
                str(tmp_path / "p" / "store"),
                "--clip",
                f"local-dir:{tmp_path / 'clip'}",
                "--out",
                str(texts),
            ]
        )
        == 0
    )
    run = [
        *common,
        "--splits",
        str(tmp_path / "splits.csv"),
        "--prompts",
        str(tmp_path / "p" / "store"),
        "--texts",
        str(texts),
    ]
    settings = '{"epochs": 2, "lr": 0.001}'

    def train_and_predict(name: str) -> tuple[bytes, bytes]:
        assert main(["train", "stage1", *run, "--out", str(tmp_path / name), "--settings", settings]) == 0
        assert main(["train", "predict", *run, "--model", str(tmp_path / name), "--out", str(tmp_path / name)]) == 0
        return (tmp_path / name / "model.safetensors").read_bytes(), (tmp_path / name / "probs.npy").read_bytes()

    weights_a, probs_a = train_and_predict("a")
    sam = ["--sam", '{"name": "small", "image_size": 64}']
    assert main(["train", "embed-images", *common, *sam, "--out", str(tmp_path / "emb")]) == 0

    def prior_and_refined(name: str) -> tuple[dict, object]:
        """The labelled split's prior, then CRF boxes weighted by it and refined by SAM."""
        out = tmp_path / name
        out.mkdir()
        prior = ["--splits", str(tmp_path / "splits.csv"), "--settings", '{"saliency_power": 0.5}']
        if (store / "labels.npy").exists():
            assert (
                main(["prompts", "anatomy-prior", "--store", str(store), *prior, "--out", str(out / "prior.npz")]) == 0
            )
        else:
            shutil.copy(tmp_path / "prior_b" / "prior.npz", out / "prior.npz")
        visual = [*common, "--saliency", str(tmp_path / "p")]
        crf = ["--crf", '{"sigmoid_center": 0.5}', "--prior", str(out / "prior.npz")]
        assert main(["prompts", "crf", *visual, *crf, "--out", str(out / "crf.parquet")]) == 0
        refine = [
            *visual,
            *sam,
            "--crf",
            str(out / "crf.parquet"),
            "--embeddings",
            str(tmp_path / "emb"),
            "--settings",
            '{"iterations": 2}',
        ]
        assert main(["prompts", "refine", *refine, "--out", str(out / "refined.parquet")]) == 0
        with np.load(out / "prior.npz") as data:
            maps = {key: data[key] for key in ("maps", "counts")}
        return maps, pq.read_table(out / "refined.parquet")

    prior_a, refined_a = prior_and_refined("prior_a")
    assert prior_a["counts"].sum() > 0 and any(refined_a.column("has_box").to_pylist())
    splits = read_splits(tmp_path / "splits.csv")
    cases = pq.read_table(store / "samples.parquet").column("case_id").to_pylist()
    labels = np.load(store / "labels.npy")
    hidden = np.array([splits[case] in ("unlabeled", "test") for case in cases])
    assert {"validation", "test"} <= set(splits.values())
    labels[hidden] = np.random.default_rng(1).integers(0, 2, size=labels[hidden].shape, dtype=np.uint8)
    np.save(store / "labels.npy", labels)  # unlabelled and test labels changed (validation ones choose the epoch)
    assert main(["train", "stage1", *run, "--out", str(tmp_path / "b"), "--settings", settings]) == 0
    prior_b, refined_b = prior_and_refined("prior_b")
    (store / "labels.npy").unlink()  # prediction runs with no labels on disk
    _, refined_c = prior_and_refined("prior_c")  # the CRF with the prior and the refinement read no labels
    assert all(np.array_equal(prior_a[key], prior_b[key]) for key in prior_a)
    assert refined_a.equals(refined_b) and refined_a.equals(refined_c)
    assert main(["train", "predict", *run, "--model", str(tmp_path / "b"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == weights_a
    chosen = [json.loads((tmp_path / n / "settings.json").read_text())["selection"] for n in "ab"]
    assert chosen[0] == chosen[1] and chosen[0]["split"] == "validation"
    assert (tmp_path / "b" / "probs.npy").read_bytes() == probs_a
    # candidates, the annotator that needs no ground truth, and stage 2 run with no labels on disk either
    assert main(["align", "candidates", "--probs", str(tmp_path / "b"), "--out", str(tmp_path / "cand")]) == 0
    annotations = tmp_path / "annotations.parquet"
    prompts = str(tmp_path / "p" / "store")
    # the model sources (perturbed prompts, dropout) run the stage-1 model on images and prompts alone
    drawn = ["--settings", '{"source": ["thresholds", "perturb", "dropout"], "empty": true, "draws": 2}']
    drawn += ["--model", str(tmp_path / "b"), "--prompts", prompts, "--texts", str(texts), "--store", str(store)]
    assert main(["align", "candidates", "--probs", str(tmp_path / "b"), "--out", str(tmp_path / "drawn"), *drawn]) == 0
    assert (tmp_path / "drawn" / "candidates.npy").is_file()
    assert (
        main(
            [
                "align",
                "annotate",
                "--store",
                str(store),
                "--candidates",
                str(tmp_path / "cand"),
                "--out",
                str(annotations),
                "--reference",
                "prompt",
                "--prompts",
                prompts,
            ]
        )
        == 0
    )
    # the uncertainty annotator (the model's consensus under box jitter) reads no label either; `present` needs them
    consensus = [
        "--reference",
        "uncertainty",
        "--prompts",
        prompts,
        "--model",
        str(tmp_path / "b"),
        "--texts",
        str(texts),
    ]
    annotate = ["align", "annotate", "--store", str(store), "--candidates", str(tmp_path / "cand"), "--no-progress"]
    assert (
        main(
            [
                *annotate,
                "--out",
                str(tmp_path / "uncertain.parquet"),
                *consensus,
                "--uncertainty",
                '{"augmentations": 2}',
            ]
        )
        == 0
    )
    assert pq.read_table(tmp_path / "uncertain.parquet").num_rows > 0
    assert (
        main(
            [
                *annotate,
                "--out",
                str(tmp_path / "present.parquet"),
                "--reference",
                "prompt",
                "--prompts",
                prompts,
                "--classes",
                "present",
            ]
        )
        != 0
    )
    assert not (tmp_path / "present.parquet").exists()
    # stage 2 on the uncertainty annotations: the prompt annotator prefers no candidate here, so stage 2 would not train
    align = [
        "--candidates",
        str(tmp_path / "cand"),
        "--annotations",
        str(tmp_path / "uncertain.parquet"),
        "--prompts",
        prompts,
        "--texts",
        str(texts),
    ]
    assert (
        main(
            [
                "align",
                "train",
                *common,
                *align,
                "--model",
                str(tmp_path / "b"),
                "--out",
                str(tmp_path / "s2"),
                "--settings",
                '{"epochs": 1, "reduction": "sum"}',
            ]
        )
        == 0
    )
    assert (tmp_path / "s2" / "model.safetensors").read_bytes() != (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()  # it trained

    def stage2_anchored(name: str, stored: np.ndarray) -> bytes:
        """Stage 2 anchored on the labelled split's ground truth, with ``stored`` as labels.npy: its weights."""
        np.save(store / "labels.npy", stored)
        anchored = [
            "--splits",
            str(tmp_path / "splits.csv"),
            "--settings",
            '{"epochs": 1, "anchor_weight": 1.0, "anchor_on": "labeled", "reduction": "sum"}',
        ]
        assert (
            main(
                [
                    "align",
                    "train",
                    *common,
                    *align,
                    *anchored,
                    "--model",
                    str(tmp_path / "b"),
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
        return (tmp_path / name / "model.safetensors").read_bytes()

    # the anchored stage 2 reads the labelled split's labels and no other: other poison in every
    # unlabelled and test label leaves its weights byte-identical, a change in the labelled split's does not
    other_poison = labels.copy()
    other_poison[hidden] = np.random.default_rng(2).integers(0, 2, size=labels[hidden].shape, dtype=np.uint8)
    assert not np.array_equal(other_poison[hidden], labels[hidden])
    anchored_a = stage2_anchored("s2_anchored_a", labels)
    assert stage2_anchored("s2_anchored_b", other_poison) == anchored_a
    changed = labels.copy()
    changed[~hidden] = np.roll(labels[~hidden], 5, axis=-1)  # the labelled split's ground truth moved
    assert stage2_anchored("s2_anchored_c", changed) != anchored_a
    (store / "labels.npy").unlink()
    # the shared image embeddings (made above) and the zero-shot row with CRF boxes read no label either
    zero = [*common, *sam, "--splits", str(tmp_path / "splits.csv"), "--embeddings", str(tmp_path / "emb")]
    assert (
        main(
            [
                "train",
                "zero-shot",
                *zero,
                "--boxes",
                "cam",
                "--prompts",
                prompts,
                "--out",
                str(tmp_path / "zs"),
                "--splits-to-predict",
                "unlabeled",
                "test",
            ]
        )
        == 0
    )
    # the oracle row reads test labels, so it predicts the test split alone (never candidates' images)
    assert (
        main(
            [
                "train",
                "zero-shot",
                *zero,
                "--boxes",
                "gt",
                "--out",
                str(tmp_path / "gt"),
                "--splits-to-predict",
                "unlabeled",
                "test",
            ]
        )
        != 0
    )
    assert not (tmp_path / "gt" / "probs.npy").exists()


def test_scrambled_test_labels_change_no_baseline_choice(data: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    """The U-Net's weights and chosen epoch and nnU-Net's whole dataset (raw cases, preprocessed cases, its fold's
    train / validation split) are the same bytes whether the test labels hold an impossible class or any other."""
    store, splits = data
    scrambled = Path(shutil.copytree(store, tmp_path / "scrambled"))
    labels = np.load(scrambled / "labels.npy")
    test = np.array(
        [SPLIT[case] == "test" for case in pq.read_table(scrambled / "samples.parquet")["case_id"].to_pylist()]
    )
    labels[test] = np.random.default_rng(3).integers(0, 3, size=labels[test].shape, dtype=np.uint8)
    np.save(scrambled / "labels.npy", labels)
    unet = json.dumps({"channels": [8, 16], "strides": [2], "num_res_units": 0, "epochs": 4, "batch_size": 4})
    nnunet = json.dumps({"epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "device": "cpu"})
    outputs = {}
    for name, folder in (("poisoned", store), ("scrambled", scrambled)):
        common = ["--store", str(folder), "--splits", str(splits), "--no-progress"]
        out = tmp_path / f"unet_{name}"
        assert main(["unet", "train", *common, "--out", str(out), "--settings", unet]) == 0
        root = tmp_path / f"nnunet_{name}"
        assert main(["nnunet", "prepare", *common, "--root", str(root), "--settings", nnunet]) == 0
        dataset = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".json", ".npz", ".b2nd"))
        outputs[name] = (
            (out / "model.safetensors").read_bytes(),
            json.loads((out / "settings.json").read_text())["selection"],
            {p.relative_to(root): p.read_bytes() for p in dataset if "fingerprint" not in p.name},
        )
    assert outputs["poisoned"][0] == outputs["scrambled"][0] and outputs["poisoned"][1] == outputs["scrambled"][1]
    assert outputs["poisoned"][2] == outputs["scrambled"][2] and len(outputs["poisoned"][2]) > 12
