"""A trained model's prompt recipe: everything ``samdpo segment`` needs to prompt a new image as the model's run
prompted its store, kept in the model folder's ``recipe/``.

``recipe/recipe.json`` holds the dataset kind, its class names and image size, the reader's settings (CT window),
the CLIP prompts and modality, the ``saliency``, ``crf``, ``boxes``, ``refine``, ``sam``, ``vqa``, ``llm`` sections,
the prompt store's saliency size, the ``predict`` section and the evaluation threshold, with the dataset's own
overrides merged (as the rules pass them), plus the model's settings hash, SAM and CLIP. Beside it lie copies of
the labelled split's ``anatomy_prior.npz`` and ``presence_prior.json`` (when the run uses them) and of the
pipeline-trained small CLIP (``clip/``, ~90 MB, hard-linked where the file system allows); a user's ``hf-hub:``
or ``local-dir:`` CLIP is named, not copied. Every section is parsed into its settings class when the recipe is
written and again when it is read.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

RECIPE_DIR, RECIPE_FILE, FORMAT = "recipe", "recipe.json", 1
PRIOR_FILE, PRESENCE_FILE, CLIP_DIR = "anatomy_prior.npz", "presence_prior.json", "clip"
#: The keys of ``--settings`` (the config sections the prompt rules and prediction read).
SETTINGS_KEYS = (
    "reader",
    "prompts",
    "modality",
    "saliency",
    "crf",
    "boxes",
    "refine",
    "sam",
    "vqa",
    "llm",
    "saliency_size",
    "predict",
    "threshold",
    "answer_cache",
)
#: The keys of ``recipe.json`` besides SETTINGS_KEYS.
RECIPE_KEYS = (
    "format",
    "dataset",
    "class_names",
    "image_size",
    "model",
    "clip_copy",
    "anatomy_prior",
    "presence_prior",
)


@dataclass(frozen=True)
class Recipe:
    """A read, checked recipe.

    Attributes:
        folder: the ``recipe/`` folder; values: the contents of ``recipe.json``.
        clip_id: the CLIP to load (the copy in ``folder/clip`` or the user's model id).
        prior, presence: the copied priors, None where the run used none.
        sections: each SETTINGS_KEYS section parsed (its settings object, parsed once when read).
    """

    folder: Path
    values: dict[str, Any]
    clip_id: str
    prior: Path | None
    presence: Path | None
    sections: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.values["dataset"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.values["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.values["image_size"])

    def settings(self, key: str) -> Any:
        """The parsed settings of section ``key`` (``reader`` for the dataset's reader)."""
        return self.sections[key]


def _parsed(kind: str, key: str, values: Any) -> Any:
    """One section's settings object (its dataclass), or the raw value for the sections that have none."""
    from samdpo.data.readers import reader_for
    from samdpo.prompts.text.llm import LlmSettings
    from samdpo.prompts.text.vqa import VqaSettings
    from samdpo.prompts.visual.crf import CrfSettings
    from samdpo.prompts.visual.refine import RefineSettings
    from samdpo.prompts.visual.saliency import SaliencySettings
    from samdpo.settings import parse_settings
    from samdpo.train.predict_settings import PredictSettings

    classes = {
        "saliency": SaliencySettings,
        "crf": CrfSettings,
        "refine": RefineSettings,
        "vqa": VqaSettings,
        "llm": LlmSettings,
        "predict": PredictSettings,
    }
    if key == "reader":
        return reader_for(kind, values)[1]
    if key in classes:
        return parse_settings(classes[key], values, key)
    return values


def write_recipe(
    model_dir: Path | str,
    store_dir: Path | str,
    settings: dict[str, Any],
    clip_id: str,
    clip_folder: Path | str | None,
    prior: Path | str | None,
    presence: Path | str | None,
    out: Path | str,
) -> str:
    """Write the ``recipe/`` folder ``out`` of the model in ``model_dir``, trained on the store ``store_dir``
    (its table only: kind, class names, image size; no labels); the folder appears complete or not at all.

    Raises:
        ConfigError: ``settings`` missing a key or with a bad section; a CLIP or SAM other than the model's.
    """
    from samdpo.data.store import SampleStore
    from samdpo.sam.specs import resolve_sam
    from samdpo.train.model_folder import read_model_spec

    missing = [key for key in SETTINGS_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"--settings: missing {missing} (keys: {', '.join(SETTINGS_KEYS)})")
    spec = read_model_spec(model_dir)
    store = SampleStore(Path(store_dir))
    for key in SETTINGS_KEYS:
        _parsed(store.kind, key, settings[key])
    if spec["clip"] != clip_id:
        raise ConfigError(f"{model_dir}: trained with the CLIP {spec['clip']}, not {clip_id}")
    sam = json.loads(json.dumps(resolve_sam(dict(settings["sam"]), store.image_size)))  # as settings.json holds it
    if sam != spec["sam"]:
        raise ConfigError(f"{model_dir}: trained on the SAM {spec['sam']}, but the sam section gives {sam}")
    values = {
        "format": FORMAT,
        "dataset": store.kind,
        "class_names": list(store.class_names),
        "image_size": store.image_size,
        "model": {"settings_hash": spec["settings_hash"], "sam": spec["sam"], "clip": spec["clip"]},
        "clip_copy": CLIP_DIR if clip_folder else None,
        "anatomy_prior": PRIOR_FILE if prior else None,
        "presence_prior": PRESENCE_FILE if presence else None,
        **{key: settings[key] for key in SETTINGS_KEYS},
    }
    with atomic.atomic_dir(out) as tmp:
        if clip_folder:
            shutil.copytree(clip_folder, tmp / CLIP_DIR, copy_function=_link_or_copy)
        for source, name in ((prior, PRIOR_FILE), (presence, PRESENCE_FILE)):
            if source:
                shutil.copyfile(source, tmp / name)
        (tmp / RECIPE_FILE).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    given = ((CLIP_DIR, clip_folder), (PRIOR_FILE, prior), (PRESENCE_FILE, presence))
    copied = [name for name, source in given if source]
    return f"prompt recipe of {model_dir} ({store.kind}, {len(store.class_names)} classes) in {out}: {copied}"


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link ``source`` to ``target`` (a later rewrite of the source makes a new file and leaves the link's
    content as it was), or copy it across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def read_recipe(model_dir: Path | str) -> Recipe:
    """The checked recipe of a trained model folder.

    Raises:
        DataError: no or unreadable recipe, one written for another model (its settings hash or SAM), or a
            recipe file missing.
    """
    from samdpo.train.model_folder import read_model_spec

    folder = Path(model_dir) / RECIPE_DIR
    path = folder / RECIPE_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: no prompt recipe; make it with `snakemake {path.parent}` (the model_recipe rule) in the run "
            "that trained the model"
        )
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable recipe ({exc}); rerun the model_recipe rule") from exc
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise DataError(f"{path}: not a format-{FORMAT} samdpo recipe; rerun the model_recipe rule")
    missing = [key for key in (*RECIPE_KEYS, *SETTINGS_KEYS) if key not in values]
    if missing or not isinstance(values["model"], dict) or not {"sam", "settings_hash", "clip"} <= set(values["model"]):
        raise DataError(
            f"{path}: incomplete recipe (missing {missing or ['model entries']}); rerun the model_recipe rule"
        )
    threshold = values["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise DataError(f"{path}: threshold {threshold!r} is not a number between 0 and 1; rerun the model_recipe rule")
    spec = read_model_spec(model_dir)
    made_for = values["model"]
    if made_for["sam"] != spec["sam"]:
        raise DataError(
            f"{path}: written for a model on the SAM {made_for['sam'].get('name')}, but {model_dir} holds one on "
            f"{spec['sam'].get('name')}; rerun the model_recipe rule"
        )
    if made_for["settings_hash"] != spec["settings_hash"]:
        raise DataError(
            f"{path}: written for another model ({values['dataset']}, settings {made_for['settings_hash']}) than "
            f"the one in {model_dir} (settings {spec['settings_hash']}); rerun the model_recipe rule"
        )
    files = {key: values[key] for key in ("clip_copy", "anatomy_prior", "presence_prior") if values[key]}
    for name in files.values():
        if not (folder / name).exists():
            raise DataError(f"{folder / name}: missing from the recipe; rerun the model_recipe rule")
    try:
        sections = {key: _parsed(values["dataset"], key, values[key]) for key in SETTINGS_KEYS}
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from exc
    copy = files.get("clip_copy")
    return Recipe(
        folder=folder,
        values=values,
        clip_id=f"local-dir:{(folder / copy).resolve()}" if copy else str(made_for["clip"]),
        prior=folder / files["anatomy_prior"] if "anatomy_prior" in files else None,
        presence=folder / files["presence_prior"] if "presence_prior" in files else None,
        sections=sections,
    )
