"""The Snakemake workflow: dry run of the main target, the data rules on the smoke config, bad config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow (Snakefile, workflow/, environment.yml) in a fresh folder, as a user's clone is."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "workflow", tmp_path / "workflow")
    return tmp_path


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(workdir), *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)


def test_dry_run_of_the_main_table_shows_the_data_rules(workdir: Path) -> None:
    result = snakemake(workdir, "-n", "results/amos_table.csv")
    assert result.returncode == 0, result.stderr
    for rule in ("synth_dataset", "prepare_samples", "split_cases", "results_table"):
        assert rule in result.stdout


def test_data_and_prompt_rules_on_the_smoke_config(workdir: Path) -> None:
    result = snakemake(workdir, "--configfile", "workflow/config/smoke.yaml")
    assert result.returncode == 0, result.stderr
    assert "extended by additional config" not in result.stdout + result.stderr  # replaced, not merged
    for dataset in ("amos", "busi", "cxr"):
        splits = pd.read_csv(workdir / f"results/data/splits/{dataset}.csv")
        assert set(splits["split"]) == {"labeled", "unlabeled", "test"}
        assert (workdir / f"results/data/prepared/{dataset}/images.npy").is_file()
        assert (workdir / f"results/logs/prepare_samples/{dataset}.log").is_file()
    assert (workdir / "results/benchmarks/prepare_samples/amos.tsv").is_file()
    for dataset in ("amos", "busi", "cxr"):
        quality = pd.read_csv(workdir / f"results/prompts/{dataset}/box_quality.csv")
        assert {"class", "crf_box", "full_image_box", "mean_labeled_box"} <= set(quality.columns)
    for dataset in ("amos", "busi", "cxr"):
        samples = pd.read_parquet(workdir / f"results/data/prepared/{dataset}/samples.parquet")
        files = sorted(p.stem for p in (workdir / "prompts_cache" / dataset).glob("*.parquet"))
        assert files == sorted(samples["sample_id"])
        probs = json.loads((workdir / f"results/stage1/{dataset}/probs.json").read_text())
        assert probs["splits"] == ["unlabeled", "test"] and len(probs["sample_ids"]) < len(samples)
        assert (workdir / f"results/stage1/{dataset}/loss.png").is_file()
    shown = subprocess.run(["samdpo", "prompts", "show", files[0] + ".parquet"], cwd=workdir / "prompts_cache/cxr", capture_output=True, text=True)
    assert shown.returncode == 0 and "lungs" in shown.stdout and "geometry" in shown.stdout, shown.stderr
    rerun = snakemake(workdir, "--configfile", "workflow/config/smoke.yaml", "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    # a changed setting reruns its rule and what depends on it, nothing upstream
    stage1 = {"embed_texts": 3, "train_stage1": 3, "predict_stage1": 3}
    for change, expected in (
        ({"crf.iterations": 2}, {"crf": 3, "box_quality": 3, "vqa": 3, "prompt_store": 3, **stage1}),
        ({"vqa.questions": {"shape": "What shape is the {name}?"}}, {"vqa": 3, "prompt_store": 3, **stage1}),
        ({"llm.prompt": "Describe the {name}."}, {"llm": 3, "prompt_store": 3, **stage1}),
        ({"prompt_store.saliency_size": 32}, {"prompt_store": 3, **stage1}),
        ({"stage1.lr": 0.002}, {"train_stage1": 3, "predict_stage1": 3}),
    ):
        changed = snakemake(workdir, "--configfile", str(_config(workdir, change)), "-n")
        assert _planned_jobs(changed.stdout) == {**expected, "all": 1}, (change, changed.stdout)


def _planned_jobs(dry_run_output: str) -> dict[str, int]:
    """The job counts table of a dry run."""
    lines = dry_run_output.split("Job stats:")[1].splitlines()
    counts = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _config(workdir: Path, change: dict) -> Path:
    config = yaml.safe_load((workdir / "workflow/config/smoke.yaml").read_text())
    for dotted, value in change.items():
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        ({"splits.labeled": 1.5}, "labeled"),
        ({"image_size": 8}, "image_size"),
        ({"datasets.amos.source": "disk"}, "root"),
        ({"datasets.amos.reader.modality": "pet"}, "modality"),
    ],
)
def test_bad_config_is_rejected_before_any_work(workdir: Path, change: dict, message: str) -> None:
    result = snakemake(workdir, "--configfile", str(_config(workdir, change)), "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error validating config" in output and message in output
    assert not (workdir / "results").exists()


def test_missing_dataset_folder_is_named(workdir: Path) -> None:
    path = _config(workdir, {"datasets.busi.source": "disk", "datasets.busi.root": "/no/such/BUSI"})
    result = snakemake(workdir, "--configfile", str(path), "-n")
    assert result.returncode != 0
    assert "datasets.busi.root: /no/such/BUSI does not exist" in result.stdout + result.stderr


def test_a_config_file_replaces_the_default_datasets(workdir: Path) -> None:
    config = yaml.safe_load((workdir / "workflow/config/smoke.yaml").read_text())
    config["datasets"] = {"cxr": config["datasets"]["cxr"]}
    (workdir / "only_cxr.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--configfile", "only_cxr.yaml", "-n")
    assert result.returncode == 0, result.stderr
    assert "dataset=cxr" in result.stdout and "dataset=amos" not in result.stdout
