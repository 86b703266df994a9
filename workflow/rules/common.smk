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
    """Targets of the default target: data products, prompt store, box quality and stage-1 probabilities of every dataset."""
    return [
        path
        for name in DATASETS
        for path in (
            f"results/data/{name}_summary.json",
            f"results/data/splits/{name}.csv",
            f"results/prompts/{name}/box_quality.csv",
            f"prompts_cache/{name}",
            f"results/stage1/{name}/probs.npy",
        )
    ]


def section_json(name):
    """One config section as a JSON object (a change reruns the rules that take it as a param).

    A function, so that Snakemake leaves braces in the values (question templates) alone.
    """
    text = json.dumps(config[name], sort_keys=True)
    return lambda wildcards: text


def dataset_clip(dataset):
    """(CLIP model id, name of the pipeline-trained small CLIP or None) used for one dataset."""
    own = config["datasets"][dataset]["clip"]
    model = own.get("model") or config["clip"]["model"]
    if model:
        return model, None
    name = f"small_{dataset}" if own.get("pretrain") else "small"
    return f"local-dir:results/clip/{name}", name


def clip_id(wildcards):
    """The CLIP the dataset's saliency queries (a user's hf-hub:/local-dir: model, or a small one)."""
    return dataset_clip(wildcards.dataset)[0]


def clip_files(wildcards):
    """Files of the small CLIP the pipeline trains for this dataset; nothing for a user's model."""
    name = dataset_clip(wildcards.dataset)[1]
    if name is None:
        return []
    return [f"results/clip/{name}/open_clip_config.json", f"results/clip/{name}/open_clip_model.safetensors"]


def pretrain_settings(wildcards):
    """Pretraining settings of one small CLIP: clip.pretrain, with a dataset's own overrides merged."""
    settings = dict(config["clip"]["pretrain"])
    if wildcards.clip_name != "small":
        settings.update(config["datasets"][wildcards.clip_name.removeprefix("small_")]["clip"]["pretrain"])
    return json.dumps(settings, sort_keys=True)


def prompt_settings(wildcards):
    """The dataset's zero-shot prompt template and negative prompts, as JSON."""
    prompts = config["datasets"][wildcards.dataset]["prompts"]
    return json.dumps({key: prompts[key] for key in ("template", "negatives")}, sort_keys=True)


def modality(wildcards):
    """The modality named in the dataset's VQA questions and LLM prompt (e.g. "abdominal CT")."""
    return config["datasets"][wildcards.dataset]["prompts"]["modality"]


def vqa_crf_table(wildcards):
    """The CRF table, which the geometry VQA backend reads; model backends read images only."""
    return f"results/prompts/{wildcards.dataset}/crf.parquet" if config["vqa"]["backend"] == "geometry" else []
