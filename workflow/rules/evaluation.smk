# The U-Net baseline, evaluation of every model on the test split, and the results tables.


rule train_unet:
    input:
        table=STORE.table,
        images=STORE.images,
        labels=STORE.labels,
        splits=SPLITS,
    output:
        weights=UNET.weights,
        settings=UNET.settings,
        curve=UNET.curve,
        plot=report(
            UNET.plot,
            caption="../report/curve.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "model": "unet{suffix}", "stage": "baseline"},
        ),
    params:
        store=folder_of("table"),
        folder=folder_of("weights", "output"),
        settings=unet_settings,
    wildcard_constraints:
        suffix="(_seed[0-9]+)?",
    conda:
        ENV
    log:
        "results/logs/train_unet/{dataset}{suffix}.log",
    benchmark:
        "results/benchmarks/train_unet/{dataset}{suffix}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo unet train --store {params.store} --splits {input.splits} --out {params.folder}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule predict_unet:
    input:
        table=STORE.table,
        images=STORE.images,
        splits=SPLITS,
        weights=UNET.weights,
    output:
        probs=UNET.probs,
        meta=UNET.probs_meta,
    params:
        store=folder_of("table"),
        model=folder_of("weights"),
        folder=folder_of("probs", "output"),
    wildcard_constraints:
        suffix="(_seed[0-9]+)?",
    conda:
        ENV
    log:
        "results/logs/predict_unet/{dataset}{suffix}.log",
    benchmark:
        "results/benchmarks/predict_unet/{dataset}{suffix}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo unet predict --store {params.store} --splits {input.splits} --model {params.model}"
        " --out {params.folder} --threads {threads} > {log} 2>&1"



# nnU-Net (nnunetv2) on the same splits as the U-Net: its raw dataset, fingerprint, plans and 2d preprocessing,
# then training (fold all) and the test split's probabilities; nnU-Net's folders are set by each command.
rule prepare_nnunet:
    input:
        table=STORE.table,
        images=STORE.images,
        labels=STORE.labels,
        splits=SPLITS,
    output:
        raw=directory(NNUNET.raw),
        preprocessed=directory(NNUNET.preprocessed),
    params:
        store=folder_of("table"),
        root=folder_of("raw", "output"),
        settings=section_json("nnunet", ["splits", "processes"]),
    conda:
        ENV
    log:
        "results/logs/prepare_nnunet/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_nnunet/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
    shell:
        "samdpo nnunet prepare --store {params.store} --splits {input.splits} --root {params.root}"
        " --settings {params.settings:q} --no-progress > {log} 2>&1"


rule train_nnunet:
    input:
        table=STORE.table,
        splits=SPLITS,
        raw=NNUNET.raw,
        preprocessed=NNUNET.preprocessed,
    output:
        results=directory(NNUNET.results),
        plot=report(
            NNUNET.plot,
            caption="../report/curve.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "model": "nnunet", "stage": "baseline"},
        ),
    params:
        store=folder_of("table"),
        root=folder_of("preprocessed"),
        settings=section_json("nnunet"),
    conda:
        ENV
    log:
        "results/logs/train_nnunet/{dataset}.log",
    benchmark:
        "results/benchmarks/train_nnunet/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo nnunet train --store {params.store} --splits {input.splits} --root {params.root}"
        " --settings {params.settings:q} --threads {threads} --no-progress > {log} 2>&1"


rule predict_nnunet:
    input:
        table=STORE.table,
        images=STORE.images,
        splits=SPLITS,
        results=NNUNET.results,
    output:
        probs=NNUNET.probs,
        meta=NNUNET.probs_meta,
    params:
        store=folder_of("table"),
        root=folder_of("results"),
        folder=folder_of("probs", "output"),
        device=config["nnunet"]["device"],
    conda:
        ENV
    log:
        "results/logs/predict_nnunet/{dataset}.log",
    benchmark:
        "results/benchmarks/predict_nnunet/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        gpu=1,
    shell:
        "samdpo nnunet predict --store {params.store} --splits {input.splits} --root {params.root}"
        " --out {params.folder} --device {params.device} --threads {threads} --no-progress > {log} 2>&1"

# Evaluation: one `samdpo eval` per dataset, group (EVALUATE_RULES) and stage-1 seed scores several models, paying the
# process start and the MONAI import once; each model's per-image CSV and summary JSON are outputs.
for rule_name, (evaluated, suffix) in EVALUATE_RULES.items():

    rule:
        name:
            rule_name
        input:
            table=STORE.table,
            labels=STORE.labels,
            splits=SPLITS,
            probs=evaluated_files(evaluated, "probs.npy"),
            meta=evaluated_files(evaluated, "probs.json"),
        output:
            per_image=[evaluation(f"{model}{suffix}", ".csv") for model in evaluated],
            summaries=[evaluation(f"{model}{suffix}", ".json") for model in evaluated],
        wildcard_constraints:
            suffix="(_seed[0-9]+)?",
        params:
            store=folder_of("table"),
            models=folder_of("probs"),
            methods=lambda wildcards, evaluated=evaluated: [
                f"{model}{getattr(wildcards, 'suffix', '')}" for model in evaluated
            ],
            threshold=config["evaluation"]["threshold"],
            tolerance=config["evaluation"]["tolerance_mm"],
        conda:
            ENV
        log:
            f"results/logs/{rule_name}/{{dataset}}{suffix}.log",
        benchmark:
            f"results/benchmarks/{rule_name}/{{dataset}}{suffix}.tsv"
        threads: 1
        resources:
            mem_mb=3000,
        shell:
            "samdpo eval --store {params.store} --splits {input.splits} --probs {params.models:q}"
            " --out {output.per_image:q} --method {params.methods:q} --threshold {params.threshold}"
            " --tolerance-mm {params.tolerance} > {log} 2>&1"


# The label volumes of a 3D dataset's test cases, on each scan's own grid and affine, and the 3D metrics read off them.
rule volume_files:
    input:
        table=STORE.table,
        labels=STORE.labels,
        splits=SPLITS,
        probs=lambda wildcards: os.path.join(model_folder(wildcards.dataset, wildcards.model), "probs.npy"),
        meta=lambda wildcards: os.path.join(model_folder(wildcards.dataset, wildcards.model), "probs.json"),
        root=dataset_root,
    output:
        folder=directory(VOLUMES),
    wildcard_constraints:
        dataset="|".join(VOLUME_DATASETS),
    params:
        store=folder_of("table"),
        probs=folder_of("probs"),
        reader=reader_settings,
        threshold=config["evaluation"]["threshold"],
        tolerance=config["evaluation"]["tolerance_mm"],
    conda:
        ENV
    log:
        "results/logs/volume_files/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/volume_files/{dataset}/{model}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
    shell:
        "samdpo volumes --store {params.store} --splits {input.splits} --probs {params.probs} --root {input.root:q}"
        " --reader {params.reader:q} --out {output.folder} --threshold {params.threshold}"
        " --tolerance-mm {params.tolerance} --no-progress > {log} 2>&1"


rule results_table:
    input:
        summaries=table_summaries,
        volumes=table_volumes,
    output:
        csv=report(
            f"{TABLE}.csv",
            caption="../report/table.rst",
            category=lambda wildcards: TABLE_KINDS[wildcards.kind][1],
            labels={"dataset": "{dataset}", "file": "CSV"},
        ),
        markdown=f"{TABLE}.md",
        figure=report(
            f"{TABLE}.png",
            caption="../report/table.rst",
            category=lambda wildcards: TABLE_KINDS[wildcards.kind][1],
            labels={"dataset": "{dataset}", "file": "figure"},
        ),
    wildcard_constraints:
        kind="|".join(TABLE_KINDS),
    params:
        methods=table_methods,
        models=table_models,
        volumes=lambda wildcards, input: [os.path.join(folder, "summary.json") for folder in input.volumes],
        provenance=provenance,
    conda:
        ENV
    log:
        "results/logs/tables/{dataset}_{kind}.log",
    benchmark:
        "results/benchmarks/tables/{dataset}_{kind}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo table --dataset {wildcards.dataset} --summaries {input.summaries:q} --methods {params.methods:q}"
        " --models {params.models:q} --volumes {params.volumes:q} --provenance {params.provenance:q}"
        " --out {output.csv} > {log} 2>&1"


rule dpo_effect:
    input:
        reference=evaluation(START_FROM, ".csv"),
        aligned=aligned_evaluations,
        diagnostics=aligned_settings,
    output:
        csv=f"{DPO_EFFECT}.csv",
        md=f"{DPO_EFFECT}.md",
    params:
        evaluations=folder_of("reference"),
        reference=START_FROM,
        models=ALIGN_VARIANTS,
    conda:
        ENV
    log:
        "results/logs/dpo_effect/{dataset}.log",
    benchmark:
        "results/benchmarks/dpo_effect/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo dpo-effect --eval {params.evaluations} --reference {params.reference:q} --models {params.models:q}"
        " --diagnostics {input.diagnostics} --out {output.csv} > {log} 2>&1"
