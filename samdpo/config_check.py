"""Checks of the workflow configuration that its JSON schema cannot express, run before any job.

The workflow (``workflow/rules/common.smk``) validates the config against
``workflow/schemas/config.schema.yaml`` with the defaults filled in, then calls :func:`check_config`:
every cross-field mistake that would otherwise fail late (after hours of jobs) or silently is a
:class:`~samdpo.errors.ConfigError` naming the setting and what to do. The model names the rules
make are defined here too (:data:`ZERO_SHOT`, :func:`stage1_models`), so the check and the rules agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from samdpo.errors import ConfigError

#: The zero-shot rows (the pretrained SAM with box prompts alone) and where their boxes come from.
ZERO_SHOT = {"zero_shot_cam_box": "cam", "oracle_gt_box": "gt"}
#: The supervised baselines (trained on the labels of their settings' splits), by the model name a table row uses.
BASELINES = {"unet": "the U-Net baseline", "nnunet": "the nnU-Net baseline"}
#: Sections a dataset may override key by key (``datasets.NAME.SECTION`` merged over ``SECTION``).
OVERRIDDEN = ("anatomy", "presence", "predict", "refine", "study")


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the first bad setting of a schema-validated config (defaults filled in).

    Relative paths are read from the current folder (Snakemake's working directory).
    """
    _check_paths(config)
    _check_splits(config)
    _check_image_size(config)
    _check_models(config)
    _check_tables(config)
    _check_overrides(config)
    _check_studies(config)
    _check_text(config)
    _check_align(config)


def dataset_seeds(config: Mapping[str, Any], dataset: str) -> list[int]:
    """The stage-1 seeds of one dataset: its own ``datasets.NAME.seeds`` or the top-level ``seeds``."""
    return list(config["datasets"][dataset].get("seeds") or config["seeds"])


def seeded(config: Mapping[str, Any], variant: str, seed: int) -> str:
    """The model name of a stage-1 variant trained with a seed other than stage1.seed (``prompt_10_seed1``)."""
    return variant if seed == config["stage1"]["seed"] else f"{variant}_seed{seed}"


def stage1_models(config: Mapping[str, Any]) -> list[str]:
    """Every stage-1 model name a rule makes: each variant, and its ``_seedN`` names for any dataset's seeds
    (sorted)."""
    return sorted(
        {
            name
            for variant in config["stage1_variants"]
            for dataset in config["datasets"]
            for name in [variant, *(seeded(config, variant, seed) for seed in dataset_seeds(config, dataset))]
        }
    )


def aligned(config: Mapping[str, Any], variant: str, seed: int) -> str:
    """The model name of an align variant with a stage-2 seed other than align.stage2.seed (``dpo_rank_seed1``)."""
    return variant if seed == config["align"]["stage2"]["seed"] else f"{variant}_seed{seed}"


def align_models(config: Mapping[str, Any]) -> list[str]:
    """Every aligned model name a rule makes: each align variant once per stage-2 seed of ``align.seeds`` (sorted)."""
    return sorted({aligned(config, v, s) for v in config["align"]["variants"] for s in config["align"]["seeds"]})


def model_names(config: Mapping[str, Any]) -> list[str]:
    """The models a table row may name: the baselines, the zero-shot rows, the stage-1 models and the align variants."""
    return [*BASELINES, *ZERO_SHOT, *stage1_models(config), *sorted(config["align"]["variants"])]


def _local_dir(model: str | None) -> str | None:
    """The folder of a ``local-dir:`` CLIP id (None for hub ids and the pipeline's own CLIP)."""
    return model.removeprefix("local-dir:") if model and model.startswith("local-dir:") else None


def _check_paths(config: Mapping[str, Any]) -> None:
    """Every configured file or folder exists (all missing ones named at once)."""
    datasets = config["datasets"]
    wanted = [
        (f"datasets.{name}.root", entry["root"], "folder")
        for name, entry in datasets.items()
        if entry["source"] == "disk"
    ]
    wanted.append(("sam.checkpoint", config["sam"]["checkpoint"], "file"))
    wanted.append(("clip.model", _local_dir(config["clip"]["model"]), "folder"))
    wanted += [
        (f"datasets.{name}.clip.model", _local_dir(entry["clip"].get("model")), "folder")
        for name, entry in datasets.items()
    ]
    wanted.append(("llm.descriptions", config["llm"]["descriptions"], "file"))
    missing = [
        f"{setting}: {path} does not exist"
        for setting, path, kind in wanted
        if path and not (Path(path).is_dir() if kind == "folder" else Path(path).is_file())
    ]
    if missing:
        raise ConfigError(f"missing files or folders (set them in your config file): {'; '.join(missing)}")


def _check_splits(config: Mapping[str, Any]) -> None:
    """The fractions leave cases for the test split, and every synthetic dataset has cases for every split."""
    from samdpo.data.splits import split_counts

    splits = config["splits"]
    fractions = (splits["labeled"], splits["unlabeled"], splits["validation"])
    split_counts(10**6, *fractions)  # the fractions alone
    for name, entry in config["datasets"].items():
        cases = (entry.get("synthetic") or {}).get("cases")
        if entry["source"] == "synthetic" and isinstance(cases, int):
            try:
                split_counts(cases, *fractions)
            except ConfigError as exc:
                raise ConfigError(f"datasets.{name}.synthetic.cases {cases}: {exc}") from None


def _check_image_size(config: Mapping[str, Any]) -> None:
    """The SAM's settings are buildable and ``image_size`` suits the small SAM's patches and the U-Net's strides."""
    from samdpo.baselines.nnunet_settings import NnunetSettings
    from samdpo.baselines.unet_settings import UnetSettings, check_image_size
    from samdpo.sam.engine import require_packages
    from samdpo.sam.settings import SamSettings
    from samdpo.sam.specs import resolve_sam
    from samdpo.settings import parse_settings

    size, sam = config["image_size"], config["sam"]
    if sam["name"] == "small" and sam["image_size"] is None and size % sam["patch_size"]:
        raise ConfigError(
            f"image_size: {size} is not a multiple of sam.patch_size {sam['patch_size']} (the small SAM's encoder "
            "takes "
            f"the images at image_size); use e.g. {size - size % sam['patch_size']}"
        )
    require_packages(SamSettings(**resolve_sam(dict(sam), size)).engine)
    parse_settings(NnunetSettings, config["nnunet"], "nnunet")
    unet = parse_settings(UnetSettings, config["unet"], "unet")
    try:
        check_image_size(unet, size)
    except ConfigError as exc:
        raise ConfigError(f"image_size: {size} does not suit the U-Net baseline: {exc}") from exc


def _check_models(config: Mapping[str, Any]) -> None:
    """align.start_from names a stage-1 variant, and no two models share a name (a name picks one model's folder)."""
    variants, start = config["stage1_variants"], config["align"]["start_from"]
    if start not in variants:
        raise ConfigError(
            f"align.start_from: {start!r} is not a stage1_variants entry ({', '.join(variants) or 'none'}); "
            "candidates, alignment, the uncertainty annotator and the report overlays start from that stage-1 "
            f"model: add `{start}: {{}}` to stage1_variants or name one of them"
        )
    others = {
        **BASELINES,
        **{name: "a zero-shot row" for name in ZERO_SHOT},
        **{name: "an align.variants entry" for name in config["align"]["variants"]},
    }
    for name in variants:
        base, _, seed = name.rpartition("_seed")
        if name in others or (seed.isdigit() and base in variants):
            clash = others.get(name, f"the seed-{seed} model of {base}")
            raise ConfigError(f"stage1_variants.{name}: the name of {clash} already; rename it")
    clashes = sorted(set(config["align"]["variants"]) & {*BASELINES, *ZERO_SHOT})
    if clashes:
        raise ConfigError(f"align.variants.{clashes[0]}: the name of a model the pipeline makes already; rename it")


def _check_tables(config: Mapping[str, Any]) -> None:
    """Every table row names a model some rule makes."""
    known = model_names(config)
    for table, rows in config["tables"].items():
        for method, model in rows.items():
            if model not in known:
                raise ConfigError(
                    f"tables.{table}.{method}: no rule makes a model {model!r}; use one of {', '.join(known)}"
                )


def _unknown_keys(setting: str, values: Mapping[str, Any], known: Sequence[str]) -> None:
    """Raise ConfigError naming the first key of ``values`` not among ``known``."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{setting}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")


def _check_overrides(config: Mapping[str, Any]) -> None:
    """A dataset's overrides and the boxes' per-class overrides name settings of the section they override,
    and the merged anatomy, presence, predict and refine settings are valid."""
    from samdpo.prompts.visual.anatomy import AnatomySettings
    from samdpo.prompts.visual.presence import PresenceSettings
    from samdpo.prompts.visual.refine import RefineSettings
    from samdpo.train.predict_settings import PredictSettings

    boxes = [key for key in config["boxes"] if key != "by_class"]
    for name, values in config["boxes"]["by_class"].items():
        _unknown_keys(f"boxes.by_class.{name}", values, boxes)
    for name, entry in config["datasets"].items():
        for section in OVERRIDDEN:
            _unknown_keys(f"datasets.{name}.{section}", entry[section], list(config[section]))
        _unknown_keys(
            f"datasets.{name}.clip.pretrain", entry["clip"].get("pretrain") or {}, list(config["clip"]["pretrain"])
        )
        sections = (
            ("anatomy", AnatomySettings),
            ("presence", PresenceSettings),
            ("predict", PredictSettings),
            ("refine", RefineSettings),
        )
        for section, settings in sections:
            try:
                settings(**{**config[section], **entry[section]})
            except (ConfigError, TypeError) as exc:
                raise ConfigError(f"datasets.{name}.{section}: {exc}") from exc


def _check_studies(config: Mapping[str, Any]) -> None:
    """Each dataset's alignment study (its own settings merged over ``study``) starts from an align
    variant, varies known settings and leaves test cases."""
    variants = config["align"]["variants"]
    for name, entry in config["datasets"].items():
        study = {**config["study"], **entry["study"]}
        origin = {key: f"datasets.{name}.study.{key}" if key in entry["study"] else f"study.{key}" for key in study}
        if study["variant"] not in variants:
            raise ConfigError(
                f"{origin['variant']}: {study['variant']!r} is not an align.variants entry "
                f"({', '.join(sorted(variants))})"
            )
        if not isinstance(study["variations"], list):
            raise ConfigError(f"{origin['variations']}: expected a list of settings, got {study['variations']!r}")
        changes = [(origin["factorial"], study["factorial"])]
        changes += [(f"{origin['variations']}[{i}]", change) for i, change in enumerate(study["variations"])]
        for setting, change in changes:
            _check_study_change(setting, change, config["splits"])


def _check_study_change(setting: str, change: Any, splits: Mapping[str, Any]) -> None:
    """One study change (the factorial or a variation) names known settings and leaves test cases
    (``splits``: the splits section)."""
    from samdpo.align.study import ANNOTATOR_KEYS, STAGE2_KEYS

    if not isinstance(change, Mapping):
        raise ConfigError(f"{setting}: expected settings (key: value), got {change!r}")
    _unknown_keys(setting, change, [*ANNOTATOR_KEYS, *STAGE2_KEYS])
    fractions = change.get("unlabeled", [])
    for fraction in fractions if isinstance(fractions, list) else [fractions]:
        held = splits["labeled"] + splits["validation"]
        if isinstance(fraction, (int, float)) and held + fraction >= 1:
            raise ConfigError(
                f"{setting}.unlabeled: {fraction} with splits.labeled {splits['labeled']} and splits.validation "
                f"{splits['validation']} leaves no test cases; make their sum below 1"
            )


def _check_text(config: Mapping[str, Any]) -> None:
    """The text prompts can be made: the VQA model is named, AMOS's modality matches its scans, and the
    knowledge backend's file describes each dataset's modality and classes."""
    from samdpo.data import amos, busi, cxr
    from samdpo.prompts.text.llm import KnowledgeLLM

    if config["vqa"]["backend"] == "transformers" and not config["vqa"]["transformers"]["model"]:
        raise ConfigError(
            "vqa.transformers.model: the transformers backend needs a model (a local folder or one in the HF cache)"
        )
    if "amos" in config["datasets"]:
        _check_amos_modality(config["datasets"]["amos"])
    if config["llm"]["backend"] != "knowledge":
        return
    classes = {"amos": amos.AMOS_CLASSES, "busi": (busi.CLASS_NAME,), "cxr": (cxr.CLASS_NAME,)}
    knowledge = KnowledgeLLM(config["llm"]["descriptions"])
    for name, entry in config["datasets"].items():
        modality = entry["prompts"]["modality"]
        described = knowledge.texts.get(modality)
        if described is None:
            raise ConfigError(
                f"datasets.{name}.prompts.modality: {modality!r} is not a modality of {knowledge.path} "
                f"({', '.join(sorted(knowledge.texts))}); use one of them, or set llm.descriptions to a file that "
                "describes it"
            )
        missing = [c for c in classes[name] if c not in described]
        if missing:
            raise ConfigError(
                f"datasets.{name}.prompts.modality: {knowledge.path} has no description of {missing[0]!r} under "
                f"{modality!r}"
            )


def _check_amos_modality(entry: Mapping[str, Any]) -> None:
    """The modality AMOS's prompts name is the one its reader keeps (CT prompts on MRI scans would pass silently)."""
    scans, modality = entry["reader"]["modality"], entry["prompts"]["modality"]
    words = modality.upper().split()
    if (scans == "mri" and "CT" in words) or (scans == "ct" and {"MR", "MRI"} & set(words)):
        raise ConfigError(
            f"datasets.amos.prompts.modality: {modality!r} is not the modality of the scans read "
            f"(datasets.amos.reader.modality: {scans}); set it to e.g. 'abdominal {scans.upper()}'"
        )


def _check_align(config: Mapping[str, Any]) -> None:
    """The candidate and stage-2 settings hold together, the annotator's classes suit its reference, and the report
    shows an align variant."""
    from samdpo.align.candidates import CandidateSettings
    from samdpo.align.stage2_settings import Stage2Settings
    from samdpo.settings import parse_settings

    align = config["align"]
    parse_settings(CandidateSettings, align["candidates"], "align.candidates")
    parse_settings(Stage2Settings, align["stage2"], "align.stage2")
    stage2 = align["stage2"]
    if stage2.get("min_grade_gap", 0) > 1 and align["reference"] == "human" and any(
        v["mode"] == "rank" for v in align["variants"].values()
    ):
        raise ConfigError(
            "align.stage2.min_grade_gap > 1 needs grades; people's rank decisions (reference human, a rank variant) "
            "carry none: use min_grade_gap 0 or 1"
        )
    if align["classes"] == "present" and align["reference"] != "ground_truth":
        raise ConfigError(
            f"align.classes: present needs to know which organs an image shows, which only the ground_truth reference "
            f"does (align.reference: {align['reference']}); use classes: all"
        )
    if align["reference"] == "human" and not align["human"]["names"]:
        raise ConfigError(
            "align.reference: human needs align.human.names, the people who graded with `samdpo annotate serve`"
        )
    if align["reference"] == "human" and align["noise"] > 0:
        raise ConfigError("align.noise simulates rating noise; people's own decisions (reference human) take none")
    after = config["report"]["after"]
    if after not in align["variants"]:
        raise ConfigError(
            f"report.after: {after!r} is not an align.variants entry ({', '.join(sorted(align['variants']))})"
        )
