# samdpo: SAM + unsupervised prompts + DPO alignment for semi-supervised medical image segmentation.
# Run: snakemake --cores 8 results/amos_table.csv   (the embedded default: synthetic data, offline)
#      snakemake --cores 8                            (rule all: every table, ablation and report overlay)
#      snakemake --cores 8 results/amos_table.csv --configfile workflow/config/amos.yaml
# Threads: the torch rules take one thread each. On the small default models two one-thread jobs do
# 1.96x the work of one, a two-thread job 1.41x (benchmarks/stage1_benchmark.py), and one-thread jobs
# do not spin-wait when --cores exceeds the machine's cores. On a larger machine or real models raise
# them: --set-threads saliency=8 train_stage1=8 (or set-threads in a profile).
from snakemake.utils import min_version

min_version("8.20")


# The embedded default, unless a config file is given: --configfile replaces it (a real-data config
# must not inherit the synthetic datasets), while --config key=value overrides still apply.
if "datasets" not in config:

    configfile: "workflow/config/default.yaml"


include: "workflow/rules/common.smk"


# An OpenAI-compatible backend's key: checked at start and passed on to every job (cluster jobs too).
# The Hugging Face loaders run with HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1, set in their rules.
if API_KEYS:

    envvars:
        *API_KEYS,


wildcard_constraints:
    dataset="|".join(DATASETS),
    clip_name="small|" + "|".join(f"small_{name}" for name in DATASETS),
    variant="|".join(STAGE1_VARIANTS + ALIGN_MODELS),
    align_variant="|".join(ALIGN_MODELS),


include: "workflow/rules/data.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/stage1.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
    default_target: True
