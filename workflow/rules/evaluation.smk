# The U-Net baseline, evaluation of every model on the test split, and the results tables.


rule train_unet:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
    output:
        weights="results/baselines/{dataset}/unet/model.safetensors",
        settings="results/baselines/{dataset}/unet/settings.json",
    params:
        settings=section_json("unet"),
    conda:
        ENV
    log:
        "results/logs/train_unet/{dataset}.log",
    benchmark:
        "results/benchmarks/train_unet/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo unet train --store $(dirname {input.table}) --splits {input.splits} --out $(dirname {output.weights})"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule predict_unet:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        splits="results/data/splits/{dataset}.csv",
        weights="results/baselines/{dataset}/unet/model.safetensors",
    output:
        probs="results/baselines/{dataset}/unet/probs.npy",
        meta="results/baselines/{dataset}/unet/probs.json",
    conda:
        ENV
    log:
        "results/logs/predict_unet/{dataset}.log",
    benchmark:
        "results/benchmarks/predict_unet/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo unet predict --store $(dirname {input.table}) --splits {input.splits} --model $(dirname {input.weights})"
        " --out $(dirname {output.probs}) --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
        probs=model_file("probs.npy"),
        meta=model_file("probs.json"),
    output:
        per_image="results/eval/{dataset}/{model}.csv",
        summary="results/eval/{dataset}/{model}.json",
    params:
        threshold=config["evaluation"]["threshold"],
        tolerance=config["evaluation"]["tolerance_mm"],
    conda:
        ENV
    log:
        "results/logs/evaluate/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
    shell:
        "samdpo eval --store $(dirname {input.table}) --splits {input.splits} --probs $(dirname {input.probs})"
        " --out {output.per_image} --threshold {params.threshold} --tolerance-mm {params.tolerance}"
        " --method {wildcards.model} > {log} 2>&1"


rule results_table:
    input:
        table_summaries("main"),
    output:
        csv=report(
            "results/{dataset}_table.csv",
            caption="../report/table.rst",
            category="Results tables",
            labels={"dataset": "{dataset}", "file": "CSV"},
        ),
        markdown="results/{dataset}_table.md",
        figure=report(
            "results/{dataset}_table.png",
            caption="../report/table.rst",
            category="Results tables",
            labels={"dataset": "{dataset}", "file": "figure"},
        ),
    params:
        methods=table_methods("main"),
        provenance=provenance,
    conda:
        ENV
    log:
        "results/logs/tables/{dataset}_table.log",
    benchmark:
        "results/benchmarks/tables/{dataset}_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo table --dataset {wildcards.dataset} --summaries {input} --methods {params.methods}"
        " --provenance {params.provenance:q} --out {output.csv} > {log} 2>&1"


rule ablation_table:
    input:
        table_summaries("ablation"),
    output:
        csv=report(
            "results/{dataset}_ablation.csv",
            caption="../report/table.rst",
            category="Ablation tables",
            labels={"dataset": "{dataset}", "file": "CSV"},
        ),
        markdown="results/{dataset}_ablation.md",
        figure=report(
            "results/{dataset}_ablation.png",
            caption="../report/table.rst",
            category="Ablation tables",
            labels={"dataset": "{dataset}", "file": "figure"},
        ),
    params:
        methods=table_methods("ablation"),
        provenance=provenance,
    conda:
        ENV
    log:
        "results/logs/tables/{dataset}_ablation.log",
    benchmark:
        "results/benchmarks/tables/{dataset}_ablation.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo table --dataset {wildcards.dataset} --summaries {input} --methods {params.methods}"
        " --provenance {params.provenance:q} --out {output.csv} > {log} 2>&1"


rule dpo_effect:
    input:
        reference="results/eval/{dataset}/prompt_10.csv",
        aligned=aligned_evaluations,
        diagnostics=aligned_settings,
    output:
        csv="results/{dataset}_dpo_effect.csv",
        md="results/{dataset}_dpo_effect.md",
    params:
        models=" ".join(ALIGN_VARIANTS),
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
        "samdpo dpo-effect --eval $(dirname {input.reference}) --reference prompt_10 --models {params.models}"
        " --diagnostics {input.diagnostics} --out {output.csv} > {log} 2>&1"
