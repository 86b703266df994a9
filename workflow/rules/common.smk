# Configuration validation and input functions shared by the rules.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml", set_default=True)

DATASETS = sorted(config["datasets"])
# Every rule runs in the project's one environment (used with `snakemake --sdm conda`).
ENV = "../../environment.yml"


def _check_disk_roots():
    """Fail before any work when a configured dataset folder is missing."""
    missing = [
        f"datasets.{name}.root: {entry['root']} does not exist"
        for name, entry in config["datasets"].items()
        if entry["source"] == "disk" and not Path(entry["root"]).is_dir()
    ]
    if missing:
        raise WorkflowError("missing dataset folders (set them in your config file):\n  " + "\n  ".join(missing))


_check_disk_roots()


def dataset_root(wildcards):
    """The dataset folder: the synthetic rule's output, or the user's download."""
    entry = config["datasets"][wildcards.dataset]
    if entry["source"] == "synthetic":
        return f"results/data/synthetic/{wildcards.dataset}"
    return entry["root"]


def reader_settings(wildcards):
    """The reader's settings as a JSON object (a change reruns the rules that read it)."""
    return json.dumps(config["datasets"][wildcards.dataset]["reader"], sort_keys=True)


def synth_args(wildcards):
    """Command-line options of `samdpo synth` for one dataset."""
    synthetic = config["datasets"][wildcards.dataset]["synthetic"]
    return " ".join(f"--{key} {value}" for key, value in sorted(synthetic.items()))


def all_targets():
    """Targets of the default target: data products, prompts and box quality of every dataset."""
    return [
        path
        for name in DATASETS
        for path in (
            f"results/data/{name}_summary.json",
            f"results/data/splits/{name}.csv",
            f"results/prompts/{name}/box_quality.csv",
        )
    ]


SMALL_CLIP = "results/clip/small"


def section_json(name):
    """One config section as a JSON object (a change reruns the rules that take it as a param)."""
    return json.dumps(config[name], sort_keys=True)


def clip_id():
    """The CLIP to query: the configured hf-hub:/local-dir: model, or the pipeline's small CLIP."""
    return config["clip"]["model"] or f"local-dir:{SMALL_CLIP}"


def clip_files():
    """Files of the small CLIP when the pipeline trains it; nothing for a user's model."""
    if config["clip"]["model"]:
        return []
    return [f"{SMALL_CLIP}/open_clip_config.json", f"{SMALL_CLIP}/open_clip_model.safetensors"]


def prompt_settings(wildcards):
    """The dataset's zero-shot prompt template and negative prompts, as JSON."""
    return json.dumps(config["datasets"][wildcards.dataset]["prompts"], sort_keys=True)
