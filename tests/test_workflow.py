"""The Snakemake workflow: dry runs of the main target, the whole DAG on the smoke config (its reruns, the
alignment study and the report), bad configs."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--set-threads",
        "crf=1",
        "--directory",
        str(workdir),
        *args,
    ]
    return subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=1200)


def _segment_gives_the_pipelines_masks(workdir: Path, test_cases: pd.Series) -> None:
    """`samdpo segment` with the run's prompt_10 model folders (their recipes) on a test scan and a test image,
    with no store: the masks the pipeline predicted for them, voxel for voxel on the slices it stored."""
    import nibabel as nib
    from PIL import Image

    from samdpo.data.amos import to_display
    from samdpo.data.transforms import resize_label
    from samdpo.evaluation.metrics import probability_cut
    from samdpo.predictions import read_predictions

    def segment(dataset: str, image: Path, out: Path) -> None:
        model = workdir / f"results/stage1/{dataset}/prompt_10"
        assert (model / "recipe/recipe.json").is_file()
        command = ["samdpo", "segment", "--model", str(model), "--image", str(image), "--out", str(out)]
        done = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True)
        assert done.returncode == 0 and "segment [9/9] predict" in done.stderr, done.stderr

    samples = pd.read_parquet(workdir / "results/data/prepared/amos/samples.parquet")
    case = sorted(test_cases)[0]
    rows = samples[samples["case_id"] == case]
    scan = workdir / "results/data/synthetic/amos" / rows["source"].iloc[0]
    segment("amos", scan, workdir / "new_scan.nii.gz")
    written, pipeline = (
        nib.load(workdir / "new_scan.nii.gz"),
        nib.load(workdir / f"results/volumes/amos/prompt_10/{case}.nii.gz"),
    )
    assert written.shape == nib.load(scan).shape and np.allclose(written.affine, nib.load(scan).affine)
    mine, theirs = (to_display(np.asarray(nib.as_closest_canonical(v).dataobj)) for v in (written, pipeline))
    stored = rows["slice_index"].to_numpy()
    np.testing.assert_array_equal(mine[stored], theirs[stored])
    assert mine.any()

    probs, meta = read_predictions(workdir / "results/stage1/busi/prompt_10")
    busi = pd.read_parquet(workdir / "results/data/prepared/busi/samples.parquet").set_index("sample_id")
    sample = meta["sample_ids"][meta["sample_splits"].index("test")]
    image = workdir / "results/data/synthetic/busi" / busi.loc[sample, "source"]
    segment("busi", image, workdir / "new_image.png")
    mask = np.asarray(Image.open(workdir / "new_image.png"))
    row = meta["sample_ids"].index(sample)
    expected = resize_label((probs[row, 0] >= probability_cut(0.5)).astype(np.uint8), mask.shape) * 255
    assert mask.shape == np.asarray(Image.open(image)).shape[:2]
    np.testing.assert_array_equal(mask, expected)


def test_dry_run_of_the_main_table_shows_the_data_rules(workdir: Path) -> None:
    result = snakemake(workdir, "-n", "results/amos_table.csv")
    assert result.returncode == 0, result.stderr
    for rule in ("synth_dataset", "prepare_samples", "split_cases", "results_table"):
        assert rule in result.stdout


def test_smoke_config_runs_the_whole_dag_then_reruns_only_what_a_change_touches_and_reports(workdir: Path) -> None:
    result = snakemake(workdir, "--configfile", "workflow/config/smoke.yaml")
    assert result.returncode == 0, result.stderr
    assert "extended by additional config" not in result.stdout + result.stderr  # replaced, not merged
    for dataset in ("amos", "busi", "cxr"):
        splits = pd.read_csv(workdir / f"results/data/splits/{dataset}.csv")
        assert set(splits["split"]) == {"labeled", "unlabeled", "validation", "test"}
        assert (workdir / f"results/data/prepared/{dataset}/images.npy").is_file()
        assert (workdir / f"results/logs/prepare_samples/{dataset}.log").is_file()
    assert (workdir / "results/benchmarks/prepare_samples/amos.tsv").is_file()
    for dataset in ("amos", "busi", "cxr"):
        table = pd.read_csv(workdir / f"results/{dataset}_table.csv")
        assert list(table["method"]) == [
            "unet",
            "nnunet",
            "zero_shot_cam_box",
            "sam_20_gt_box",
            "ours_prompt_10",
            "ours_prompt_20",
            "ours_dpo_10_10",
            "oracle_gt_box",
        ]
        main_metric = "mdice" if dataset == "amos" else "dice"
        assert {main_metric, "nsd", "hd95", "data_models"} <= set(table.columns)
        assert table["data_models"].str.contains("synthetic").all()
        ablation = pd.read_csv(workdir / f"results/{dataset}_ablation.csv")
        assert list(ablation["method"]) == ["ours_prompt_10", "ours_dpo_score", "ours_dpo_rank", "ours_dpo_best"]
        effect = pd.read_csv(workdir / f"results/{dataset}_dpo_effect.csv")
        assert {"pairs", "median_disagreement_px", "at_ln2", "mean_margin", "best_rose", "why_no_preference"} <= set(
            effect.columns
        )
        assert "Alignment diagnostics" in (workdir / f"results/{dataset}_dpo_effect.md").read_text()
        assert (
            sorted(effect["model"]) == ["dpo_best", "dpo_rank", "dpo_score"]
            and (effect["reference_model"] == "prompt_10").all()
        )
        assert (effect["low"] <= effect["difference"]).all() and (effect["difference"] <= effect["high"]).all()
        for suffix in (".md", ".png"):
            assert (workdir / f"results/{dataset}_table{suffix}").is_file()
    assert {"liver", "spleen", "mdice_3d", "mdice_3d_nii", "nsd_3d_nii", "hd95_3d_nii"} <= set(
        pd.read_csv(workdir / "results/amos_table.csv").columns
    )
    assert "nsd_3d_nii" not in pd.read_csv(workdir / "results/cxr_table.csv").columns  # 2D: no label volumes
    volumes = workdir / "results/volumes/amos/prompt_10"
    test_cases = pd.read_csv(workdir / "results/data/splits/amos.csv").query("split == 'test'")["case_id"]
    assert sorted(p.name for p in volumes.glob("*.nii.gz")) == sorted(f"{case}.nii.gz" for case in test_cases)
    _segment_gives_the_pipelines_masks(workdir, test_cases)
    presence = json.loads((workdir / "results/prompts/amos/presence_prior.json").read_text())
    assert 0 < presence["threshold"] < 1 and presence["labelled_slices"] > 0
    for dataset in ("amos", "busi", "cxr"):
        quality = pd.read_csv(workdir / f"results/prompts/{dataset}/box_quality.csv")
        assert {"class", "crf_box", "refined_box", "full_image_box", "mean_labeled_box"} <= set(quality.columns)
        check = pd.read_csv(workdir / f"results/prompts/{dataset}/saliency_check.csv")
        assert {"class", "mean_correlation"} <= set(check.columns)
        assert (workdir / f"results/prompts/{dataset}/anatomy_prior.npz").is_file()
    for dataset in ("amos", "busi", "cxr"):
        samples = pd.read_parquet(workdir / f"results/data/prepared/{dataset}/samples.parquet")
        files = sorted(p.stem for p in (workdir / "prompts_cache" / dataset).glob("*.parquet"))
        assert files == sorted(samples["sample_id"])
        probs = json.loads((workdir / f"results/stage1/{dataset}/prompt_10/probs.json").read_text())
        assert probs["splits"] == ["unlabeled", "test"] and len(probs["sample_ids"]) < len(samples)
        assert json.loads((workdir / f"results/stage1/{dataset}/prompt_20/probs.json").read_text())["splits"] == [
            "test"
        ]
        assert json.loads((workdir / f"results/zero_shot/{dataset}/gt_box/probs.json").read_text())["splits"] == [
            "test"
        ]
        embedded = json.loads((workdir / f"results/embeddings/{dataset}/embeddings.json").read_text())
        assert embedded["sample_ids"] == list(samples["sample_id"])
        assert (workdir / f"results/stage1/{dataset}/prompt_10/loss.png").is_file()
    shown = subprocess.run(
        ["samdpo", "prompts", "show", files[0] + ".parquet"],
        check=False,
        cwd=workdir / "prompts_cache/cxr",
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and "lungs" in shown.stdout and "geometry" in shown.stdout, shown.stderr
    rerun = snakemake(workdir, "--configfile", "workflow/config/smoke.yaml", "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    # a changed setting reruns its rule and what depends on it, nothing upstream or beside it
    for change, rerun_rules, kept in (
        (
            {"crf.iterations": 2},
            {"crf", "refine_boxes", "box_quality", "vqa", "prompt_store", "train_stage1", "align"},
            {"saliency", "anatomy_prior", "pretrain_clip", "llm", "train_unet"},
        ),
        (
            {"refine.margin": 3},
            {"refine_boxes", "box_quality", "vqa", "prompt_store", "predict_zero_shot"},
            {"crf", "anatomy_prior", "saliency", "embed_images", "train_unet"},
        ),
        (
            {"anatomy.smoothing": 2.0},
            {"anatomy_prior", "crf", "refine_boxes", "box_quality"},
            {"saliency", "embed_images", "train_unet"},
        ),
        (
            {"vqa.questions": {"shape": "What shape is the {name}?"}},
            {"vqa", "prompt_store", "embed_texts"},
            {"crf", "saliency", "llm"},
        ),
        ({"llm.prompt": "Describe the {name}."}, {"llm", "prompt_store"}, {"vqa", "crf"}),
        (
            {"presence.bandwidth": 0.1},
            {"presence_prior", "prompt_store", "train_stage1", "volume_files"},
            {"crf", "saliency", "vqa", "train_unet"},
        ),
        (
            {"predict.volume": "propagate"},
            {"predict_sam", "evaluate", "volume_files"},
            {"train_stage1", "prompt_store"},
        ),
        ({"prompt_store.saliency_size": 32}, {"prompt_store", "train_stage1"}, {"vqa", "llm", "crf"}),
        (
            {"stage1.lr": 0.002},
            {"train_stage1", "predict_sam", "candidates", "align", "results_table"},
            {"embed_texts", "prompt_store", "train_unet", "embed_images", "predict_zero_shot"},
        ),
        (
            {"align.stage2.beta2": 0.25},
            {"align", "predict_sam", "evaluate", "results_table"},
            {"train_stage1", "candidates", "annotate"},
        ),
        ({"align.classes": "present"}, {"annotate", "align", "dpo_effect"}, {"train_stage1", "candidates"}),
        ({"align.noise": 0.3}, {"annotate", "align"}, {"train_stage1", "candidates"}),
        ({"align.stage2.anchor_weight": 1.0}, {"align", "dpo_effect"}, {"candidates", "annotate"}),
        # another candidate source: new candidates, grades and stage 2 from the same stage-1 model
        ({"align.candidates.source": ["perturb"]}, {"candidates", "annotate", "align"}, {"train_stage1"}),
        # three seeds: two more models per stage-1 row and U-Net, averaged by the tables; alignment keeps its start
        (
            {"seeds": [0, 1, 2]},
            {"train_stage1", "predict_sam", "train_unet", "predict_unet", "evaluate_stage1", "results_table"},
            {"candidates", "annotate", "align", "evaluate"},
        ),
    ):
        changed = snakemake(workdir, "--configfile", str(_config(workdir, change)), "-n")
        jobs = set(_planned_jobs(changed.stdout))
        assert rerun_rules <= jobs and not kept & jobs, (change, jobs)
    # three stage-2 seeds: two more aligned models per aligned table row (3 in the ablation), same candidates
    aligned = _planned_jobs(
        snakemake(workdir, "--configfile", str(_config(workdir, {"align.seeds": [0, 1, 2]})), "-n").stdout
    )
    assert aligned["align"] == 3 * 2 * 3 and "candidates" not in aligned and "train_stage1" not in aligned, aligned
    seeded = _planned_jobs(snakemake(workdir, "--configfile", str(_config(workdir, {"seeds": [0, 1, 2]})), "-n").stdout)
    assert seeded["train_stage1"] == 3 * 2 * 3, seeded  # 3 datasets x 2 more seeds x 3 stage-1 variants
    assert seeded["train_unet"] == 3 * 2 and seeded["predict_unet"] == 3 * 2, seeded
    # one evaluation per dataset and seed, both tables of each dataset
    assert seeded["evaluate_stage1"] == 3 * 2 and seeded["results_table"] == 3 * 2, seeded
    # table rows named with spaces and parentheses: each name reaches `samdpo table` whole, nothing else reruns
    rows = {
        "U-Net (2D)": "unet",
        "nnU-Net (2d, fold all)": "nnunet",
        "ours, 10% labels": "prompt_10",
        "oracle GT box": "oracle_gt_box",
        "x": "sam_20_gt_box",
        "y": "zero_shot_cam_box",
        "z": "prompt_20",
        "DPO 'rank'": "dpo_rank",
    }
    renamed = snakemake(workdir, "results/busi_table.csv", "--configfile", str(_config(workdir, {"tables.main": rows})))
    assert renamed.returncode == 0, renamed.stderr
    assert set(_planned_jobs(renamed.stderr)) == {"results_table"}
    assert list(pd.read_csv(workdir / "results/busi_table.csv")["method"]) == sorted(rows)  # the order _config wrote
    # the alignment study (not in rule all): a small grid on BUSI, one row per run, against prompt_10
    study = {
        "factorial": {"reduction": ["sum", "disagreement_mean"]},
        "variations": [{"unlabeled": 0.3}, {"reference": "uncertainty", "classes": "all"}],
    }
    studied = snakemake(
        workdir, "results/busi_alignment_study.csv", "--configfile", str(_config(workdir, {"study": study}))
    )
    assert studied.returncode == 0, studied.stderr
    rows = pd.read_csv(workdir / "results/busi_alignment_study.csv")
    assert list(rows["run"]) == ["reduction=sum", "default", "unlabeled=0.3", "reference=uncertainty"]
    assert {"pairs_with_preference", "at_ln2", "difference", "low", "high", "tau_vs_virtual"} <= set(rows.columns)
    assert {"val_mdice", "val_difference", "val_low", "val_high", "validation_images", "chosen"} <= set(rows.columns)
    assert rows["unlabeled_images"].iloc[2] > rows["unlabeled_images"].iloc[0] and rows["test_images"].nunique() == 1
    assert (workdir / "results/busi_alignment_study.md").read_text().startswith("# Alignment study (synthetic")
    choice = json.loads((workdir / "results/busi_alignment_study_choice.json").read_text())
    assert choice["chosen_on"] == "validation" and choice["chosen_run"] in set(rows["run"])
    _study_choice_ignores_test_labels(workdir, study, rows, choice)
    forced = snakemake(workdir, "--configfile", "workflow/config/smoke.yaml", "-n", "--forcerun", "candidates")
    jobs = _planned_jobs(forced.stdout)
    assert jobs["candidates"] == 3 and "train_stage1" not in jobs and {"annotate", "align"} <= set(jobs), jobs
    # one report page: tables, training and alignment curves, example overlays
    for dataset in ("amos", "busi", "cxr"):
        assert (workdir / f"results/report/{dataset}/overlays.png").stat().st_size > 10_000
    report = snakemake(workdir, "--configfile", "workflow/config/smoke.yaml", "--report", "report.html")
    assert report.returncode == 0, report.stderr
    page = (workdir / "report.html").read_text()
    for item in ("overlays.png", "amos_table.csv", "cxr_ablation.png", "Training curves", "dpo_score", "prompt_20"):
        assert item in page, item
    _align_on_a_persons_decisions(workdir)


def _study_choice_ignores_test_labels(workdir: Path, study: dict, rows: pd.DataFrame, choice: dict) -> None:
    """The study's own command on a copy of the BUSI store whose every test label is scrambled: the same choice
    and validation columns, other test columns."""
    planned = snakemake(
        workdir,
        "-n",
        "-p",
        "--forcerun",
        "alignment_study",
        "results/busi_alignment_study.csv",
        "--configfile",
        str(_config(workdir, {"study": study})),
    )
    (command,) = _shell_commands(planned.stdout, "samdpo align study")
    store = command[command.index("--store") + 1]
    scrambled = Path(shutil.copytree(workdir / store, workdir / "scrambled_store"))
    splits = pd.read_csv(workdir / command[command.index("--splits") + 1]).set_index("case_id")["split"]
    cases = pd.read_parquet(scrambled / "samples.parquet")["case_id"]
    labels = np.load(scrambled / "labels.npy")
    test = (cases.map(splits) == "test").to_numpy()
    labels[test] = np.random.default_rng(0).permutation(labels[test].reshape(-1)).reshape(labels[test].shape)
    np.save(scrambled / "labels.npy", labels)
    command[command.index("--store") + 1] = str(scrambled)
    command[command.index("--out") + 1] = str(workdir / "scrambled_study.csv")
    subprocess.run([sys.executable, "-m", "samdpo.cli", *command[1:]], check=True, cwd=workdir, capture_output=True)
    again = pd.read_csv(workdir / "scrambled_study.csv")
    validation = ["run", "seed", "val_mdice", "val_difference", "val_low", "val_high", "chosen"]
    pd.testing.assert_frame_equal(again[validation], rows[validation])
    assert json.loads((workdir / "scrambled_study_choice.json").read_text())["chosen_run"] == choice["chosen_run"]
    assert not np.allclose(again["mdice"], rows["mdice"])  # the test numbers, and they alone, moved


def _align_on_a_persons_decisions(workdir: Path) -> None:
    """A person grades AMOS pairs through the grading app's API on the smoke run's real candidates; with
    ``align.reference: human`` stage 2 then trains on exactly the decided pairs that carry a preference."""
    from starlette.testclient import TestClient

    from samdpo.align.annotator import read_annotations
    from samdpo.human.app import create_app
    from samdpo.human.server import open_session

    folder = workdir / "annotations/amos"
    candidates, prompts = workdir / "results/align/amos/candidates", workdir / "prompts_cache/amos"
    session = open_session(candidates, prompts, folder, "alice", "score")
    client = TestClient(create_app(session))
    given = {}
    for grades in ([1, 2, 3, 4], [4, 4, 1, 1], [2, 2, 2, 2])[: len(session.pairs)]:
        pair = client.get("/api/state").json()["pair"]
        assert client.post("/api/decide", json={"pair": pair["id"], "grades": grades}).status_code == 200
        given[(pair["sample_id"], session.pair(pair["id"]).class_index)] = grades
    assert given, "the smoke run's AMOS candidates left no pair to grade"
    config = _config(workdir, {"align.reference": "human", "align.human": {"names": ["alice"]}})
    aligned = snakemake(workdir, "results/align/amos/dpo_score/model.safetensors", "--configfile", str(config))
    assert aligned.returncode == 0, aligned.stderr
    assert set(_planned_jobs(aligned.stderr)) == {"annotate", "align"}, aligned.stderr
    merged = read_annotations(workdir / "results/align/amos/annotations_score.parquet")
    with_preference = {key for key, annotation in merged.items() if annotation.has_preference}
    assert with_preference == {key for key, grades in given.items() if len(set(grades)) > 1}
    assert all(merged[key].grades.tolist() == grades for key, grades in given.items())
    trained = json.loads((workdir / "results/align/amos/dpo_score/settings.json").read_text())
    assert _found(trained, "pairs_without_preference") == len(merged) - len(with_preference)


def _found(tree: object, key: str) -> object:
    """The value of the first ``key`` in a nested JSON object (None: absent)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        return next((found for item in tree if (found := _found(item, key)) is not None), None)
    return None


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


def _shell_commands(dry_run_output: str, program: str) -> list[list[str]]:
    """The arguments of each shell command of a ``-n -p`` dry run that runs ``program`` (e.g. ``samdpo table``)."""
    lines = [line[line.index(program) :] for line in dry_run_output.splitlines() if program in line]
    return [shlex.split(line.split(" > ")[0]) for line in lines]


def test_table_method_names_with_spaces_reach_the_command_whole(workdir: Path) -> None:
    config = {
        "tables.main": {"U-Net (2D)": "unet", "ours prompt 10": "prompt_10"},
        "tables.ablation": {"it's DPO": "dpo_rank"},
    }
    targets = ["results/cxr_table.csv", "results/cxr_ablation.csv"]
    result = snakemake(workdir, "-n", "-p", *targets, "--configfile", str(_config(workdir, config)))
    assert result.returncode == 0, result.stderr
    commands = _shell_commands(result.stdout, "samdpo table")
    methods = [argv[argv.index("--methods") + 1 : argv.index("--models")] for argv in commands]
    models = [argv[argv.index("--models") + 1 : argv.index("--volumes")] for argv in commands]
    assert all(argv[argv.index("--volumes") + 1] == "--provenance" for argv in commands)  # 2D: no label volumes
    assert sorted(methods) == [["U-Net (2D)", "ours prompt 10"], ["it's DPO"]]
    assert sorted(models) == [["dpo_rank"], ["unet", "prompt_10"]]


def test_align_start_from_moves_every_rule_that_starts_from_it(workdir: Path) -> None:
    targets = ["results/cxr_dpo_effect.csv", "results/report/cxr/overlays.png", "results/cxr_alignment_study.csv"]
    start_from = "align={start_from: prompt_20, reference: uncertainty}"
    result = snakemake(workdir, "-n", "-p", *targets, "--config", start_from)
    assert result.returncode == 0, result.stderr
    starting = {
        "samdpo align candidates": "--probs",
        "samdpo align annotate": "--model",
        "samdpo align train": "--model",
        "samdpo align study": "--model",
        "samdpo overlays": "--before",
    }
    for program, option in starting.items():
        commands = _shell_commands(result.stdout, program)
        assert commands, program
        assert all(argv[argv.index(option) + 1] == "results/stage1/cxr/prompt_20" for argv in commands), program
    (effect,) = _shell_commands(result.stdout, "samdpo dpo-effect")
    assert effect[effect.index("--reference") + 1] == "prompt_20"
    predicted = {
        argv[argv.index("--model") + 1]: argv[argv.index("--splits-to-predict") + 1 : argv.index("--settings")]
        for argv in _shell_commands(result.stdout, "samdpo train predict")
    }
    assert predicted["results/stage1/cxr/prompt_20"] == ["unlabeled", "test"]
    assert predicted["results/stage1/cxr/prompt_10"] == ["test"]


def test_human_reference_passes_each_persons_decision_file(workdir: Path) -> None:
    change = {"align.reference": "human", "align.human": {"names": ["alice", "bob"]}}
    target = "results/align/cxr/annotations_score.parquet"
    missing = snakemake(workdir, "-n", target, "--configfile", str(_config(workdir, change)))
    output = missing.stdout + missing.stderr
    assert missing.returncode != 0 and "Missing input" in output and "annotations_human_bob.parquet" in output
    for name in ("alice", "bob"):
        (workdir / f"annotations/cxr/annotations_human_{name}.parquet").parent.mkdir(parents=True, exist_ok=True)
        (workdir / f"annotations/cxr/annotations_human_{name}.parquet").touch()
    result = snakemake(workdir, "-n", "-p", target, "--configfile", str(_config(workdir, change)))
    assert result.returncode == 0, result.stderr
    (command,) = _shell_commands(result.stdout, "samdpo align annotate")
    assert command[command.index("--reference") + 1] == "human"
    assert command[command.index("--human") + 1 : command.index("--human") + 3] == [
        "annotations/cxr/annotations_human_alice.parquet",
        "annotations/cxr/annotations_human_bob.parquet",
    ]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"splits.labeled": 1.5}, "labeled"),
        ({"image_size": 8}, "image_size"),
        ({"datasets.amos.source": "disk"}, "root"),
        ({"datasets.amos.reader.modality": "pet"}, "modality"),
        ({"align.candidates.source": ["sampling"]}, "sampling"),
        ({"align.candidates.count": 1}, "count"),
    ],
)
def test_bad_config_is_rejected_before_any_work(workdir: Path, change: dict, message: str) -> None:
    result = snakemake(workdir, "--configfile", str(_config(workdir, change)), "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error validating config" in output and message in output
    assert not (workdir / "results").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"splits.validation": 0.85}, "bad config: splits: labeled 0.1 + unlabeled 0.1 + validation 0.85"),
        ({"nnunet.splits": ["labeled", "test"]}, "bad config: nnunet.splits: ['labeled', 'test'] names test"),
        ({"unet.splits": ["labeled", "validation"]}, "bad config: unet.splits: ['labeled', 'validation'] names valid"),
        ({"align.candidates.thresholds": [0.6, 0.3]}, "bad config: align.candidates.thresholds must be strictly"),
    ],
)
def test_held_out_labels_and_empty_splits_are_one_line_before_any_work(
    workdir: Path, change: dict, message: str
) -> None:
    result = snakemake(workdir, "--configfile", str(_config(workdir, change)), "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and message in output, output
    assert sum("bad config:" in line for line in output.splitlines()) == 1
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


@pytest.mark.parametrize("dataset", ["amos", "busi", "cxr"])
def test_real_configs_name_every_missing_path_before_any_work(workdir: Path, dataset: str) -> None:
    result = snakemake(workdir, "-n", f"results/{dataset}_table.csv", "--configfile", f"workflow/config/{dataset}.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        f"datasets.{dataset}.root:" in output
        and "sam.checkpoint: /models/sam-med2d_b.safetensors does not exist" in output
    )
    assert not (workdir / "results").exists()


def test_slurm_profile_dry_run_maps_gpu_rules_to_gpus(workdir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "workflow/profiles/slurm",
        "-n",
        "results/cxr_table.csv",
        "--directory",
        str(workdir),
    ]
    result = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    jobs = result.stdout.split("rule ")
    training = [job for job in jobs if job.startswith("train_stage1:")]
    assert training and all("gres=gpu:1" in job and "slurm_partition=gpu" in job for job in training)
    assert all("gres=" not in job for job in jobs if job.startswith("crf:"))


def test_stage1_given_several_gpus_starts_under_torchrun(workdir: Path) -> None:
    target = "results/stage1/cxr/prompt_10/model.safetensors"
    one = subprocess.run(
        [sys.executable, "-m", "snakemake", target, "-n", "-p", "--directory", str(workdir)],
        check=False,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    four = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            target,
            "-n",
            "-p",
            "--set-resources",
            "train_stage1:gpu=4",
            "--directory",
            str(workdir),
        ],
        check=False,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0 and four.returncode == 0, one.stderr + four.stderr
    assert "samdpo train stage1" in one.stdout and "torchrun" not in one.stdout
    assert "torchrun --standalone --nproc_per_node=4 -m samdpo.cli train stage1" in four.stdout


def test_an_openai_backend_without_its_key_fails_at_start(workdir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--directory",
        str(workdir),
        "--config",
        "llm={backend: openai}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    missing = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode != 0 and "OPENAI_API_KEY" in missing.stdout + missing.stderr
    given = subprocess.run(
        command,
        check=False,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "OPENAI_API_KEY": "sk-test"},
    )
    assert given.returncode == 0, given.stderr
