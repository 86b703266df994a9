"""Bad workflow settings are refused at validation, before any job runs, by a message naming the setting.

Most tests call :func:`samdpo.config_check.check_config` on the embedded default (schema defaults
filled in, as the workflow does) with one setting changed; a few run ``snakemake -n`` end to end.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from samdpo.config_check import check_config
from samdpo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def load_config(name: str) -> dict[str, Any]:
    """``workflow/config/NAME.yaml`` validated by the schema with its defaults filled in (as common.smk does)."""
    config = yaml.safe_load((REPO / f"workflow/config/{name}.yaml").read_text())
    validate(config, str(SCHEMA), set_default=True)
    return config


@pytest.fixture(scope="module")
def default_config() -> dict[str, Any]:
    return load_config("default")


@pytest.fixture()
def config(default_config: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the validated embedded default, to change one setting of."""
    return copy.deepcopy(default_config)


def rejected(config: dict[str, Any], *needles: str) -> str:
    """Assert check_config refuses ``config`` with one line containing every needle; returns the message."""
    with pytest.raises(ConfigError) as info:
        check_config(config)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def schema_rejected(config: dict[str, Any], *needles: str) -> None:
    """Assert the schema refuses ``config``, naming every needle."""
    with pytest.raises(WorkflowError) as info:
        validate(config, str(SCHEMA), set_default=True)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["default", "smoke", "amos", "busi", "cxr"])
def test_every_shipped_config_passes_the_checks(name: str, tmp_path: Path) -> None:
    config = load_config(name)
    if config["sam"]["checkpoint"]:  # the real-data configs: their download and weights put in place
        (tmp_path / "sam.safetensors").write_bytes(b"")
        config["sam"]["checkpoint"] = str(tmp_path / "sam.safetensors")
        for entry in config["datasets"].values():
            entry["root"] = str(tmp_path)
    check_config(config)


@pytest.mark.parametrize("labeled,unlabeled", [(0.5, 0.5), (0.7, 0.6), (0.45, 0.45)])
def test_splits_leaving_no_test_cases(config: dict[str, Any], labeled: float, unlabeled: float) -> None:
    config["splits"].update(labeled=labeled, unlabeled=unlabeled)
    rejected(config, "splits:", f"labeled {labeled}", f"unlabeled {unlabeled}", "validation 0.1", "below 1")


def test_validation_fraction_leaving_a_split_empty(config: dict[str, Any]) -> None:
    config["splits"]["validation"] = 0.85
    rejected(config, "splits:", "validation 0.85", "leaves no test cases")
    config["splits"]["validation"] = 0.1
    config["datasets"]["amos"]["synthetic"]["cases"] = 5  # 1 + 1 + 2 validation + 1 test: just enough
    check_config(config)
    config["splits"]["validation"] = 0.55  # 1 + 1 + 2 of 5 fit, 3 validation cases do not
    rejected(config, "datasets.amos.synthetic.cases 5", "validation 3", "need 6 cases")


@pytest.mark.parametrize("trainer", ["unet", "nnunet"])
@pytest.mark.parametrize("held_out", ["test", "validation"])
def test_no_trainer_may_train_on_held_out_labels(config: dict[str, Any], trainer: str, held_out: str) -> None:
    config[trainer]["splits"] = ["labeled", held_out]
    rejected(config, f"{trainer}.splits:", f"names {held_out}, whose labels are held out")


@pytest.mark.parametrize(
    "section,change,needle",
    [
        ("unet", {"patience": 0}, "unet.patience"),
        ("stage1", {"validate_every": 0}, "stage1.validate_every"),
        ("nnunet", {"budget_s": -1}, "nnunet.budget_s"),
    ],
)
def test_selection_settings_out_of_range(config: dict[str, Any], section: str, change: dict, needle: str) -> None:
    config[section].update(change)
    schema_rejected(config, needle.split(".")[1])


def test_image_size_off_the_small_sams_patches(config: dict[str, Any]) -> None:
    config["sam"]["name"] = "small"
    config["image_size"] = 100
    rejected(config, "image_size: 100", "sam.patch_size 8", "use e.g. 96")


@pytest.mark.parametrize("strides,size", [([2, 2, 2], 100), ([2, 2, 2, 2, 2], 32)])
def test_image_size_off_the_unet_strides(config: dict[str, Any], strides: list[int], size: int) -> None:
    config["image_size"] = size
    config["unet"].update(channels=[8] * (len(strides) + 1), strides=strides)
    rejected(config, f"image_size: {size}", "U-Net", "unet.strides")


@pytest.mark.parametrize(
    "sam,needle",
    [
        ({"name": "lite_medsam", "image_size": 200}, "sam.image_size: lite_medsam takes 256"),
        ({"name": "sam_med2d", "image_size": 240}, "sam.image_size: 240 is not a multiple of 32"),
        ({"name": "sam_vit_b", "patch_size": 4}, "sam.patch_size applies to sam.name 'small' only"),
        ({"name": "small", "encoder_width": 30, "encoder_heads": 4}, "sam.encoder_width: 30"),
    ],
)
def test_sam_settings_its_encoder_cannot_take(config: dict[str, Any], sam: dict[str, Any], needle: str) -> None:
    config["sam"].update(sam)
    rejected(config, needle)


def test_unknown_unet_setting(config: dict[str, Any]) -> None:
    config["unet"]["bacth_size"] = 2
    schema_rejected(config, "bacth_size")


def test_unknown_nnunet_setting_and_bad_schedule(config: dict[str, Any]) -> None:
    config["nnunet"]["epoch"] = 2
    schema_rejected(config, "epoch")
    del config["nnunet"]["epoch"]
    config["nnunet"]["iterations_per_epoch"] = 0
    schema_rejected(config, "iterations_per_epoch")


def test_unknown_corpus_kind_of_the_small_clip(config: dict[str, Any]) -> None:
    config["clip"]["pretrain"]["corpus"] = {"bsui": {"cases": 4, "seed": 1}}
    schema_rejected(config, "bsui")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"image_size": "big"}, "image_size"),
        ({"splits": {"labeled": "0.1"}}, "labeled"),
        ({"tables": {"main": {"ours": ["prompt_10"]}}}, "ours"),
    ],
)
def test_wrong_type_caught_by_the_schema(config: dict[str, Any], change: dict[str, Any], needle: str) -> None:
    config.update(change)
    schema_rejected(config, needle)


def test_amos_reader_modality_outside_its_choices(config: dict[str, Any]) -> None:
    config["datasets"]["amos"]["reader"]["modality"] = "pet"
    schema_rejected(config, "pet", "modality")


@pytest.mark.parametrize("dataset,modality", [("busi", "breast US"), ("cxr", "chest x-ray"), ("amos", "abdominal ct")])
def test_prompt_modality_the_descriptions_lack(config: dict[str, Any], dataset: str, modality: str) -> None:
    config["datasets"][dataset]["prompts"]["modality"] = modality
    rejected(config, f"datasets.{dataset}.prompts.modality: {modality!r}", "chest X-ray", "llm.descriptions")
    config["llm"]["backend"] = "openai"  # a chat model describes any modality
    check_config(config)


def test_descriptions_file_without_the_datasets_class(config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "descriptions.yaml"
    path.write_text(yaml.safe_dump({"breast ultrasound": {"lesion": "a mass"}, "chest X-ray": {"lungs": "two fields"}}))
    config["llm"]["descriptions"] = str(path)
    del config["datasets"]["amos"]
    rejected(config, "datasets.busi.prompts.modality", str(path), "'tumor'")


@pytest.mark.parametrize("scans,modality", [("mri", "abdominal CT"), ("ct", "abdominal MRI")])
def test_amos_prompt_modality_other_than_the_scans_read(config: dict[str, Any], scans: str, modality: str) -> None:
    config["datasets"]["amos"]["reader"]["modality"] = scans
    config["datasets"]["amos"]["prompts"]["modality"] = modality
    rejected(config, "datasets.amos.prompts.modality", f"datasets.amos.reader.modality: {scans}")


@pytest.mark.parametrize("table,model", [("main", "prompt_30"), ("ablation", "no_vqa"), ("main", "prompt_10_seed7")])
def test_table_row_naming_a_model_no_rule_makes(config: dict[str, Any], table: str, model: str) -> None:
    config["tables"][table]["ours"] = model
    rejected(
        config,
        f"tables.{table}.ours: no rule makes a model {model!r}",
        "unet",
        "zero_shot_cam_box",
        "prompt_10_seed1",
        "dpo_rank",
    )
    config["tables"][table]["ours"] = "prompt_10_seed2"  # a seed's own model is a valid row
    check_config(config)


def test_stage1_variants_without_the_start_from_model(config: dict[str, Any]) -> None:
    del config["stage1_variants"]["prompt_10"]
    rejected(config, "align.start_from: 'prompt_10' is not a stage1_variants entry", "alignment", "add `prompt_10: {}`")


def test_start_from_naming_no_stage1_variant(config: dict[str, Any]) -> None:
    config["align"]["start_from"] = "dpo_rank"
    rejected(config, "align.start_from: 'dpo_rank' is not a stage1_variants entry", "prompt_10, prompt_20")
    config["align"]["start_from"] = "prompt_20"  # any stage-1 variant will do
    check_config(config)


def test_start_from_defaults_to_prompt_10(config: dict[str, Any]) -> None:
    assert config["align"]["start_from"] == "prompt_10"


@pytest.mark.parametrize(
    "section,name,needle",
    [
        ("stage1_variants", "dpo_rank", "align.variants"),
        ("stage1_variants", "oracle_gt_box", "zero-shot"),
        ("stage1_variants", "prompt_10_seed1", "seed-1 model of prompt_10"),
        ("align", "unet", "align.variants.unet"),
        ("stage1_variants", "nnunet", "the nnU-Net baseline"),
        ("align", "nnunet", "align.variants.nnunet"),
    ],
)
def test_model_names_that_clash(config: dict[str, Any], section: str, name: str, needle: str) -> None:
    if section == "align":
        config["align"]["variants"][name] = {"mode": "rank", "objective": "dpo"}
    else:
        config["stage1_variants"][name] = {}
    rejected(config, name, needle, "rename")


def test_report_after_not_an_align_variant(config: dict[str, Any]) -> None:
    config["report"]["after"] = "dpo_ranked"
    rejected(config, "report.after: 'dpo_ranked'", "dpo_rank, dpo_score")


@pytest.mark.parametrize("where", ["study", "datasets.busi.study"])
def test_study_variant_not_an_align_variant(config: dict[str, Any], where: str) -> None:
    (config["study"] if where == "study" else config["datasets"]["busi"]["study"])["variant"] = "dpo_ranked"
    rejected(config, f"{where}.variant: 'dpo_ranked'", "align.variants")


@pytest.mark.parametrize("change", [{"factorial": {"reductoin": ["sum"]}}, {"variations": [{"anchr_weight": 1.0}]}])
def test_study_varying_an_unknown_setting(config: dict[str, Any], change: dict[str, Any]) -> None:
    config["datasets"]["busi"]["study"].update(change)
    rejected(config, "datasets.busi.study.", "unknown setting", "anchor_weight")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"variations": {"mode": "score"}}, "variations: expected a list"),
        ({"variations": ["mode=score"]}, "variations[0]: expected settings"),
    ],
)
def test_dataset_study_of_the_wrong_shape(config: dict[str, Any], change: dict[str, Any], needle: str) -> None:
    config["datasets"]["cxr"]["study"].update(change)
    rejected(config, f"datasets.cxr.study.{needle}")


@pytest.mark.parametrize("change", [{"variations": [{"unlabeled": 0.95}]}, {"factorial": {"unlabeled": [0.2, 0.9]}}])
def test_study_unlabeled_fraction_leaving_no_test_cases(config: dict[str, Any], change: dict[str, Any]) -> None:
    config["study"].update(change)
    rejected(config, "study.", ".unlabeled: 0.9", "splits.labeled 0.1", "splits.validation 0.1")


@pytest.mark.parametrize(
    "path,key",
    [
        ("datasets.busi.anatomy", "saliency_pwer"),
        ("datasets.cxr.refine", "iteration"),
        ("datasets.amos.study", "variants"),
        ("datasets.busi.clip.pretrain", "epoch"),
        ("boxes.by_class.lungs", "mod"),
    ],
)
def test_override_naming_an_unknown_setting(config: dict[str, Any], path: str, key: str) -> None:
    node = config
    for part in path.split("."):
        node = node.setdefault(part, {})
    node[key] = 1
    rejected(config, f"{path}.{key}: unknown setting")


@pytest.mark.parametrize(
    "section,values,needle",
    [("refine", {"iterations": -1}, "refine.iterations"), ("anatomy", {"grid": 2}, "anatomy.grid")],
)
def test_dataset_override_with_a_bad_value(
    config: dict[str, Any], section: str, values: dict[str, Any], needle: str
) -> None:
    config["datasets"]["cxr"][section].update(values)
    rejected(config, f"datasets.cxr.{section}:", needle)


def test_present_classes_without_the_ground_truth_annotator(config: dict[str, Any]) -> None:
    config["align"].update(classes="present", reference="uncertainty")
    rejected(config, "align.classes: present", "align.reference: uncertainty", "classes: all")


def test_human_reference_without_names_or_with_noise(config: dict[str, Any]) -> None:
    config["align"]["reference"] = "human"
    rejected(config, "align.human.names", "samdpo annotate serve")
    config["align"].update(human={"names": ["alice"], "folder": "annotations/{dataset}"}, noise=0.3)
    rejected(config, "align.noise", "reference human")


def test_transformers_vqa_without_a_model(config: dict[str, Any]) -> None:
    config["vqa"]["backend"] = "transformers"
    rejected(config, "vqa.transformers.model")


@pytest.mark.parametrize(
    "setting,value",
    [
        ("datasets.busi.root", "no/such/BUSI"),
        ("sam.checkpoint", "no/such/sam.pth"),
        ("llm.descriptions", "no/such.yaml"),
        ("clip.model", "local-dir:no/such/clip"),
    ],
)
def test_missing_configured_file_or_folder(config: dict[str, Any], setting: str, value: str) -> None:
    if setting == "datasets.busi.root":
        config["datasets"]["busi"]["source"] = "disk"
    section, key = setting.rsplit(".", 1)
    node = config
    for part in section.split("."):
        node = node[part]
    node[key] = value
    rejected(config, f"{setting}: {value.removeprefix('local-dir:')} does not exist")


# End to end: the workflow itself refuses the config before any job (each run takes several seconds).


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow in a fresh folder, as a user's clone is."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "workflow", tmp_path / "workflow")
    return tmp_path


def dry_run(
    workdir: Path, change: Callable[[dict[str, Any]], None], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``snakemake -n -p`` of BUSI's prompt store with the default changed by ``change``, in ``workdir``."""
    config = yaml.safe_load((REPO / "workflow/config/default.yaml").read_text())
    change(config)
    (workdir / "changed.yaml").write_text(yaml.safe_dump(config))
    environment = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "snakemake", "-n", "-p", "prompts_cache/busi", "--configfile", "changed.yaml"]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=300, env=environment, check=False
    )


def _no_prompt_10(config: dict[str, Any]) -> None:
    del config["stage1_variants"]["prompt_10"]


def _openai_llm(config: dict[str, Any]) -> None:
    config["llm"] = {"backend": "openai"}


@pytest.mark.parametrize(
    "change,needle",
    [(_no_prompt_10, "align.start_from: 'prompt_10' is not a stage1_variants entry"), (_openai_llm, "OPENAI_API_KEY")],
)
def test_workflow_refuses_a_bad_config_before_any_job(
    workdir: Path, change: Callable[[dict[str, Any]], None], needle: str
) -> None:
    result = dry_run(workdir, change, env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout
    assert "Traceback" not in result.stderr and "MissingInputException" not in result.stderr
    assert not (workdir / "results").exists() and not (workdir / "prompts_cache").exists()


def test_null_saliency_size_renders_the_image_size(workdir: Path) -> None:
    result = dry_run(workdir, lambda config: config.update(image_size=96, prompt_store={"saliency_size": None}))
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if "samdpo prompts store" in line)
    assert "--saliency-size 96 " in command  # the maps' own side: stored as computed
