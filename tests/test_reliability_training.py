"""Reliability of the resumable trainers (stage 1, stage 2, the U-Net baseline) and of atomic writes.

A checkpoint resumes only a run of the same settings, data contents and initial weights; a damaged
one is set aside and training starts over; a killed run leaves no temporary file behind for good;
a renamed file was flushed to disk first.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo import atomic
from samdpo.align import stage2 as stage2_module
from samdpo.align.pairs import preference_pairs
from samdpo.align.stage2 import LabelledSet, train_stage2
from samdpo.align.stage2_settings import Stage2Settings
from samdpo.baselines import unet as unet_module
from samdpo.baselines.unet import WEIGHTS as UNET_WEIGHTS
from samdpo.baselines.unet import train_unet
from samdpo.cli import main
from samdpo.train import stage1 as stage1_module
from samdpo.train.model_folder import WEIGHTS
from samdpo.train.stage1 import train_stage1
from tests.stage1_data import SETTINGS as STAGE1
from tests.stage1_data import small_model, training_data
from tests.stage2_data import stage2_inputs
from tests.unet_data import FAST, SPLIT, train_images
from tests.unet_data import data as data  # noqa: F401  (the module-scoped store fixture)

UNET = replace(FAST, epochs=3)


def _interrupted(monkeypatch: pytest.MonkeyPatch, module: object, name: str, call: int) -> dict[str, int]:
    """Make ``module.name`` raise KeyboardInterrupt on its ``call``-th call (restored by the caller)."""
    real, calls = getattr(module, name), {"n": 0}

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupt)
    return calls


def _stage1_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: Path) -> tuple:
    """Train stage 1 into ``out`` until the first step of epoch 3 (checkpoint after epoch 2); returns the data."""
    images, labels, prompts, texts = training_data(tmp_path)
    real = stage1_module.make_batch
    _interrupted(monkeypatch, stage1_module, "make_batch", 5)
    with pytest.raises(KeyboardInterrupt):
        train_stage1(small_model(), images, labels, prompts, texts, STAGE1, out, {}, 1, progress=False)
    monkeypatch.setattr(stage1_module, "make_batch", real)
    assert (out / "checkpoint.pt").is_file()
    return images, labels, prompts, texts


def _changed(what: str, images, labels, prompts, texts):
    """The stage-1 inputs with one of them changed in content only (same shapes, same count)."""
    images, labels, texts = images.copy(), labels.copy(), dict(texts)
    model, settings = small_model(), STAGE1
    if what == "image":
        images[0, 0, 0] ^= 1
    elif what == "label":  # a mask fixed on disk after the interruption
        labels[1, 5, 4] = 0
    elif what == "prompt":
        prompts = [replace(prompts[0], boxes=prompts[0].boxes + 1.0), *prompts[1:]]
    elif what == "text":
        key = next(iter(texts))
        texts[key] = texts[key] + 0.5
    elif what == "initial weights":  # e.g. another SAM checkpoint under the same path
        model = small_model(seed=99)
    elif what == "settings":
        settings = replace(STAGE1, lr=2e-3)
    return model, images, labels, prompts, texts, settings


@pytest.mark.parametrize("what", ["image", "label", "prompt", "text", "initial weights", "settings"])
def test_stage1_resume_restarts_when_any_input_content_changes(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut"
    inputs = _stage1_cut(tmp_path, monkeypatch, cut)
    model, images, labels, prompts, texts, settings = _changed(what, *inputs)
    capsys.readouterr()
    history = train_stage1(model, images, labels, prompts, texts, settings, cut, {}, 1, progress=False)
    out = capsys.readouterr()
    assert "training starts over" in out.err and "resuming" not in out.out
    fresh_model, *_ = _changed(what, *inputs)
    train_stage1(fresh_model, images, labels, prompts, texts, settings, tmp_path / "fresh", {}, 1, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (cut / WEIGHTS).read_bytes() == (tmp_path / "fresh" / WEIGHTS).read_bytes()


def test_stage1_resumes_when_nothing_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut"
    images, labels, prompts, texts = _stage1_cut(tmp_path, monkeypatch, cut)
    capsys.readouterr()
    train_stage1(small_model(), images, labels, prompts, texts, STAGE1, cut, {}, 1, progress=False)
    assert "resuming from" in capsys.readouterr().out


@pytest.mark.parametrize("what", ["split", "label", "settings"])
def test_unet_resume_restarts_when_its_training_set_changes(
    what: str,
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The reproduction of the issue: interrupt, change ``splits.seed`` (same image count, other images), rerun."""
    images, labels = train_images(data[0])
    real = unet_module.segmentation_loss
    _interrupted(monkeypatch, unet_module, "segmentation_loss", 7)  # the first step of epoch 3
    with pytest.raises(KeyboardInterrupt):
        train_unet(images, labels, 2, UNET, tmp_path / "cut", {}, progress=False)
    monkeypatch.setattr(unet_module, "segmentation_loss", real)
    settings = UNET
    if what == "split":  # as many images as before, two of them now from another split
        others = train_images(data[0], ("validation",))
        images, labels = np.concatenate([images[:-2], others[0][:2]]), np.concatenate([labels[:-2], labels[:2]])
    elif what == "label":
        labels = labels.copy()
        labels[0, 0, 0] = 1 - min(labels[0, 0, 0], 1)
    else:
        settings = replace(UNET, lr=2e-2)
    assert len(images) == sum(s in ("labeled", "unlabeled") for s in SPLIT.values())
    capsys.readouterr()
    history = train_unet(images, labels, 2, settings, tmp_path / "cut", {}, progress=False)
    assert "training starts over" in capsys.readouterr().err
    train_unet(images, labels, 2, settings, tmp_path / "fresh", {}, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "cut" / UNET_WEIGHTS).read_bytes() == (tmp_path / "fresh" / UNET_WEIGHTS).read_bytes()


def _damage(path: Path, how: str) -> None:
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "not a checkpoint":
        torch.save(torch.zeros(3), path)
    elif how == "missing entries":
        state = torch.load(path, weights_only=True)
        del state["optimizer"]
        torch.save(state, path)


@pytest.mark.parametrize("how", ["empty", "truncated", "random bytes", "not a checkpoint", "missing entries"])
def test_a_damaged_checkpoint_is_set_aside_and_training_restarts(
    how: str,
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, labels = train_images(data[0])
    real = unet_module.segmentation_loss
    _interrupted(monkeypatch, unet_module, "segmentation_loss", 7)
    with pytest.raises(KeyboardInterrupt):
        train_unet(images, labels, 2, UNET, tmp_path / "cut", {}, progress=False)
    monkeypatch.setattr(unet_module, "segmentation_loss", real)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    _damage(checkpoint, how)
    damaged = checkpoint.read_bytes()
    capsys.readouterr()
    history = train_unet(images, labels, 2, UNET, tmp_path / "cut", {}, progress=False)
    err = capsys.readouterr().err
    assert f"{checkpoint}: damaged checkpoint" in err and "moved to" in err and "training starts over" in err
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "cut" / "checkpoint.pt.damaged").read_bytes() == damaged
    train_unet(images, labels, 2, UNET, tmp_path / "fresh", {}, progress=False)
    assert (tmp_path / "cut" / UNET_WEIGHTS).read_bytes() == (tmp_path / "fresh" / UNET_WEIGHTS).read_bytes()


def test_a_killed_training_resumes_and_leaves_no_temporary_file(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL of `samdpo unet train` mid-run: the rerun resumes, ends bit-identical and removes the killed write's
    temporaries."""
    store, splits = data
    settings = {
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "epochs": 12,
        "lr": 0.01,
        "batch_size": 4,
        "device": "cpu",
    }
    argv = [
        "unet",
        "train",
        "--store",
        str(store),
        "--splits",
        str(splits),
        "--settings",
        json.dumps(settings),
        "--no-progress",
    ]
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "samdpo.cli", *argv, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (out / UNET_WEIGHTS).exists()
    stale = out / ".checkpoint.pt.k1ll3d.tmp"  # what a kill inside torch.save leaves
    stale.write_bytes(b"partial")
    assert main([*argv, "--out", str(out)]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert (out / UNET_WEIGHTS).read_bytes() == (tmp_path / "whole" / UNET_WEIGHTS).read_bytes()
    assert not list(out.glob(".*.tmp")) and not (out / "checkpoint.pt").exists()


def test_atomic_writes_are_flushed_before_the_rename_and_clean_up_after_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))[1])
    (tmp_path / ".out.txt.abc.tmp").write_text("left by a killed write")
    (tmp_path / ".other.txt.abc.tmp").write_text("another output's")
    atomic.write_text(tmp_path / "out.txt", "done")
    assert events == ["fsync", "replace out.txt", "fsync"]  # the file, the rename, the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.txt.abc.tmp", "out.txt"]
    events.clear()
    with atomic.atomic_dir(tmp_path / "folder") as folder:
        (folder / "a.bin").write_bytes(b"1")
    assert events == ["fsync", "replace folder", "fsync"]
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "crash.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert not (tmp_path / "crash.txt").exists() and not list(tmp_path.glob(".crash.txt.*"))


#: Stage 2 with everything a resume must restore: a scheduler that steps every epoch and the labelled
#: anchor's generator (it draws labelled pairs every step).
STAGE2 = Stage2Settings(epochs=3, lr=1e-3, lr_step=1, batch_pairs=3, anchor_weight=0.5, anchor_on="labeled")


def _stage2_data(tmp_path: Path) -> dict:
    images, candidates, prompts, texts, ids, annotations = stage2_inputs(tmp_path)
    _, labels, _, _ = training_data(tmp_path)
    pairs = preference_pairs(ids, 2, annotations, 1.0, 0.5)
    labelled = LabelledSet(images, labels, prompts, None, 1.0, 1.0)
    return {
        "images": images,
        "candidates": candidates,
        "pairs": pairs,
        "prompts": prompts,
        "texts": texts,
        "labelled": labelled,
    }


def _train2(data: dict, out: Path, settings: Stage2Settings = STAGE2, reference_seed: int = 0) -> list[dict]:
    return train_stage2(
        small_model(),
        small_model(seed=reference_seed),
        data["images"],
        data["candidates"],
        data["pairs"],
        data["prompts"],
        data["texts"],
        settings,
        out,
        {},
        1,
        progress=False,
        labelled=data["labelled"],
    )


def _stage2_cut(data: dict, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train stage 2 into ``out`` until the first step of epoch 3 (checkpoint after epoch 2)."""
    steps = math.ceil(len(data["pairs"].image) / STAGE2.batch_pairs)
    real = stage2_module.weighted_dpo_loss
    _interrupted(monkeypatch, stage2_module, "weighted_dpo_loss", 2 * steps + 1)
    with pytest.raises(KeyboardInterrupt):
        _train2(data, out)
    monkeypatch.setattr(stage2_module, "weighted_dpo_loss", real)
    assert (out / "checkpoint.pt").is_file() and not (out / WEIGHTS).exists()


def test_stage2_an_interrupted_run_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _stage2_data(tmp_path)
    assert len(data["pairs"].image) > STAGE2.batch_pairs  # several steps per epoch
    whole = _train2(data, tmp_path / "whole")
    _stage2_cut(data, tmp_path / "cut", monkeypatch)
    capsys.readouterr()
    history = _train2(data, tmp_path / "cut")
    assert "resuming from" in capsys.readouterr().out
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "whole" / WEIGHTS).read_bytes()
    logged = [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    assert logged == [{k: v for k, v in row.items() if k != "seconds"} for row in whole]
    assert (tmp_path / "cut" / "settings.json").read_text() == (tmp_path / "whole" / "settings.json").read_text()
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()


def _changed2(what: str, data: dict) -> tuple[dict, Stage2Settings, int]:
    """The stage-2 inputs with one of them changed in content only (same shapes, same count)."""
    data, settings, reference_seed = dict(data), STAGE2, 0
    if what == "preference":  # one pair's preference reversed
        weights = data["pairs"].weights.copy()
        weights[0] = weights[0][::-1]
        data["pairs"] = replace(data["pairs"], weights=weights)
    elif what == "candidate mask":
        packed = np.array(data["candidates"].packed)
        image, klass = data["pairs"].image[0], data["pairs"].klass[0]
        packed[image, klass, 1, 2] ^= 0b1000  # one pixel of one candidate flipped
        data["candidates"] = replace(data["candidates"], packed=packed)
    elif what == "labelled label":
        labels = data["labelled"].labels.copy()
        labels[0, 6, 6] = 0
        data["labelled"] = replace(data["labelled"], labels=labels)
    elif what == "reference weights":
        reference_seed = 7
    elif what == "settings":
        settings = replace(STAGE2, beta2=0.25)
    return data, settings, reference_seed


@pytest.mark.parametrize("what", ["preference", "candidate mask", "labelled label", "reference weights", "settings"])
def test_stage2_resume_restarts_when_any_input_content_changes(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _stage2_data(tmp_path)
    _stage2_cut(data, tmp_path / "cut", monkeypatch)
    changed, settings, reference_seed = _changed2(what, data)
    capsys.readouterr()
    history = _train2(changed, tmp_path / "cut", settings, reference_seed)
    out = capsys.readouterr()
    assert "training starts over" in out.err and "resuming" not in out.out
    assert [row["epoch"] for row in history] == [1, 2, 3]
    _train2(changed, tmp_path / "fresh", settings, reference_seed)
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "fresh" / WEIGHTS).read_bytes()


def test_stage2_a_damaged_checkpoint_is_set_aside_and_training_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Damage of any kind takes the same path (see the U-Net's cases); here an entry stage 2 saves is missing."""
    data = _stage2_data(tmp_path)
    _stage2_cut(data, tmp_path / "cut", monkeypatch)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    _damage(checkpoint, "missing entries")
    damaged = checkpoint.read_bytes()
    capsys.readouterr()
    history = _train2(data, tmp_path / "cut")
    err = capsys.readouterr().err
    assert f"{checkpoint}: damaged checkpoint" in err and "moved to" in err and "training starts over" in err
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "cut" / "checkpoint.pt.damaged").read_bytes() == damaged
    _train2(data, tmp_path / "fresh")
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "fresh" / WEIGHTS).read_bytes()
