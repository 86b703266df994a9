"""Settings: one parser for every config section's dataclass (unknown keys and wrong types named as
``section.key``), and one source for each default: the workflow schema's default equals the dataclass's."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import samdpo
from samdpo.align.candidates import CandidateSettings
from samdpo.align.stage2_settings import Stage2Settings
from samdpo.align.steps import AnnotatorSettings
from samdpo.align.uncertainty import UncertaintySettings
from samdpo.baselines.nnunet_settings import NnunetSettings
from samdpo.baselines.unet_settings import UnetSettings
from samdpo.clip.pretrain import PretrainSettings
from samdpo.data.amos import AmosSettings
from samdpo.data.busi import BusiSettings
from samdpo.data.cxr import CxrSettings
from samdpo.errors import ConfigError
from samdpo.prompts.text.llm import LlmSettings
from samdpo.prompts.text.openai_chat import OpenAISettings
from samdpo.prompts.text.vqa import VqaSettings
from samdpo.prompts.visual.anatomy import AnatomySettings
from samdpo.prompts.visual.boxes import BoxSettings
from samdpo.prompts.visual.crf import CrfSettings
from samdpo.prompts.visual.presence import PresenceSettings
from samdpo.prompts.visual.refine import RefineSettings
from samdpo.prompts.visual.saliency import SaliencySettings
from samdpo.sam.prompted import PromptSwitches
from samdpo.sam.settings import SamSettings
from samdpo.sam.trainable import default_parts
from samdpo.settings import parse_settings
from samdpo.synth.amos import AmosSynthSettings
from samdpo.train.predict_settings import PredictSettings
from samdpo.train.stage1 import Stage1Settings

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text())

#: (schema section, its dataclass): every config section the code parses into a dataclass.
SECTIONS = {
    "saliency": SaliencySettings,
    "crf": CrfSettings,
    "boxes": BoxSettings,
    "anatomy": AnatomySettings,
    "presence": PresenceSettings,
    "predict": PredictSettings,
    "refine": RefineSettings,
    "clip.pretrain": PretrainSettings,
    "vqa": VqaSettings,
    "llm": LlmSettings,
    "$defs.openai": OpenAISettings,
    "sam": SamSettings,
    "stage1": Stage1Settings,
    "stage1.prompts": PromptSwitches,
    "align": AnnotatorSettings,
    "align.uncertainty": UncertaintySettings,
    "align.candidates": CandidateSettings,
    "align.stage2": Stage2Settings,
    "unet": UnetSettings,
    "nnunet": NnunetSettings,
    "datasets.amos.reader": AmosSettings,
    "datasets.busi.reader": BusiSettings,
    "datasets.cxr.reader": CxrSettings,
    "datasets.amos.synthetic": AmosSynthSettings,
}

#: Schema properties of a section that are no field of its dataclass, and why.
NOT_FIELDS = {
    "boxes": {"by_class": "per-class overrides merged over the section (samdpo.prompts.visual.steps.box_settings)"},
    "stage1": {"prompts": "a section of its own: stage1.prompts (PromptSwitches)"},
    "align": {
        "start_from": "the stage-1 model that alignment starts from (the rules' choice of folders)",
        "candidates": "a section of its own: align.candidates",
        "seeds": "the stage-2 seeds of the aligned rows (the rules' model names; each run gets stage2.seed)",
        "uncertainty": "a section of its own: align.uncertainty",
        "stage2": "a section of its own: align.stage2",
        "variants": "the alignment variants (each names mode and objective)",
        "human": "the people's decision files the rules pass (samdpo align annotate --human FILE ...)",
    },
    "datasets.amos.synthetic": {"cases": "an argument of samdpo synth", "seed": "an argument of samdpo synth"},
}

#: Schema defaults of null that the code resolves (so the dataclass holds a resolved value, or none), and why.
RESOLVED = {
    "stage1.train": "null = per SAM, samdpo.sam.trainable.default_parts (the dataclass holds SAM-Med2D's, the paper's)",
    "sam.name": "no dataclass default: the rules always pass it (samdpo.sam.specs.resolve_sam fills small when absent)",
    "sam.image_size": "null = per SAM and dataset: samdpo.sam.specs.resolve_sam fills it",
}

#: Dataclasses named ``...Settings`` that are no config section (they are built in code, not parsed from JSON).
NOT_SECTIONS = {"ImageFileSettings": "the readers' shared base (max_image_pixels): BusiSettings and CxrSettings"}


def _section(path: str) -> dict[str, Any]:
    """The schema node of a dotted path (``$defs.openai``, ``datasets.amos.reader``, ``align.stage2``)."""
    first, *rest = path.split(".")
    node = SCHEMA["$defs"][rest.pop(0)] if first == "$defs" else SCHEMA["properties"][first]
    for part in rest:
        node = node["properties"][part]
    return node


def _default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory's value), or MISSING."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _yaml(value: Any) -> str:
    """A value as the schema's descriptions write it (``[16, 32]``, ``false``, ``auto``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _comparable(value: Any) -> Any:
    """Tuples as lists (the schema's YAML has no tuples)."""
    return [_comparable(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", list(SECTIONS))
def test_schema_defaults_are_the_dataclass_defaults(path: str) -> None:
    """Each schema default equals the dataclass default; where the schema deliberately has none
    (adding one would change the rules' parameters and rerun users' results), its description names it."""
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[path])}
    for name, prop in _section(path)["properties"].items():
        if name in NOT_FIELDS.get(path, {}):
            continue
        assert name in fields, f"{path}.{name}: no field of {SECTIONS[path].__name__}"
        default = _default(fields[name])
        if f"{path}.{name}" in RESOLVED:
            continue
        if "default" in prop:
            assert prop["default"] == _comparable(default), (
                f"{path}.{name}: schema {prop['default']!r}, dataclass {default!r}"
            )
        else:
            assert f"default {_yaml(default)}" in prop.get("description", ""), (
                f"{path}.{name}: the description names no default {default!r}"
            )


def test_resolved_defaults() -> None:
    assert Stage1Settings().train == default_parts("sam_med2d")
    assert {f.name for f in dataclasses.fields(SamSettings) if f.default is dataclasses.MISSING} == {
        "name",
        "image_size",
    }


def test_every_settings_dataclass_is_a_section() -> None:
    """A new ``...Settings`` dataclass joins SECTIONS (its defaults checked against the schema) or NOT_SECTIONS."""
    found = set()
    for path in Path(samdpo.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Settings") and node.decorator_list:
                found.add(node.name)
    assert found == {cls.__name__ for cls in SECTIONS.values() if cls.__name__.endswith("Settings")} | set(NOT_SECTIONS)


@dataclass(frozen=True)
class _Example:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    name: str = "a"
    limit: int | None = None
    sizes: tuple[int, ...] = (1, 2)
    table: dict[str, str] = field(default_factory=dict)
    anything: Any = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ConfigError(f"example.count must be >= 0, got {self.count}")


@dataclass(frozen=True)
class _Required:
    name: str
    size: int = 1


def test_parse_settings_accepts_json_values() -> None:
    parsed = parse_settings(
        _Example,
        {"count": 3, "rate": 2, "flag": True, "limit": None, "sizes": [4], "table": {"a": "b"}, "anything": [1]},
        "example",
    )
    assert parsed == _Example(3, 2, True, "a", None, [4], {"a": "b"}, [1])
    assert isinstance(parsed.rate, int)  # an int passes as a float and is kept as it is (settings hashes unchanged)
    assert parse_settings(_Example, None, "example") == _Example()
    assert parse_settings(_Example, {"limit": 7}, "example").limit == 7


@pytest.mark.parametrize(
    "values,message",
    [
        (
            {"cuont": 3},
            r"example\.cuont: unknown setting \(known: anything, count, flag, limit, name, rate, sizes, table\)",
        ),
        ({"count": True}, r"example\.count: expected an integer, got True"),  # a bool is no int
        ({"count": 2.0}, r"example\.count: expected an integer, got 2\.0"),
        ({"rate": "fast"}, r"example\.rate: expected a number, got 'fast'"),
        ({"rate": False}, r"example\.rate: expected a number"),
        ({"flag": 1}, r"example\.flag: expected true or false, got 1"),
        ({"name": None}, r"example\.name: expected a string, got None"),
        ({"limit": "7"}, r"example\.limit: expected an integer or null"),
        ({"sizes": "12"}, r"example\.sizes: expected a list \(an integer each\)"),
        ({"sizes": [1, "2"]}, r"example\.sizes: expected a list"),
        ({"table": ["a"]}, r"example\.table: expected an object"),
        ({"table": {"a": 1}}, r"example\.table: expected an object"),
        ({"count": -1}, r"example\.count must be >= 0"),  # the dataclass's own range check still runs
    ],
)
def test_parse_settings_names_the_bad_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(_Example, values, "example")


def test_parse_settings_of_real_sections() -> None:
    with pytest.raises(ConfigError, match=r"^busi\.include_normals: unknown setting"):
        parse_settings(BusiSettings, {"include_normals": True}, "busi")  # as the reader's own checks name them
    with pytest.raises(ConfigError, match=r"^unet\.channels: expected a list \(an integer each\), got 16"):
        parse_settings(UnetSettings, {"channels": 16}, "unet")
    with pytest.raises(ConfigError, match=r"^vqa\.openai\.cache_endpoint: expected true or false, got 'yes'"):
        parse_settings(OpenAISettings, {"cache_endpoint": "yes"}, "vqa.openai")
    with pytest.raises(ConfigError, match=r"^sam\.name: missing setting"):
        parse_settings(_Required, {}, "sam")
    assert parse_settings(UnetSettings, {"channels": [8, 16], "strides": [2]}, "unet").channels == (8, 16)
