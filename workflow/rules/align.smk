# Preference alignment: candidates from the prompt_10 model's probabilities on the unlabelled split,
# the annotator's grades or order (the only rule besides evaluation that reads unlabelled labels,
# with reference ground_truth), and stage 2 per align.variants entry.


rule candidates:
    input:
        probs="results/stage1/{dataset}/prompt_10/probs.npy",
        meta="results/stage1/{dataset}/prompt_10/probs.json",
    output:
        levels="results/align/{dataset}/candidates/candidates.npy",
        meta="results/align/{dataset}/candidates/candidates.json",
    params:
        thresholds=" ".join(str(t) for t in config["align"]["thresholds"]),
    conda:
        ENV
    log:
        "results/logs/candidates/{dataset}.log",
    benchmark:
        "results/benchmarks/candidates/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "samdpo align candidates --probs $(dirname {input.probs}) --out $(dirname {output.levels})"
        " --thresholds {params.thresholds} > {log} 2>&1"


rule annotate:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        labels="results/data/prepared/{dataset}/labels.npy",
        prompts="prompts_cache/{dataset}",
        levels="results/align/{dataset}/candidates/candidates.npy",
        meta="results/align/{dataset}/candidates/candidates.json",
    output:
        "results/align/{dataset}/annotations_{mode}.parquet",
    wildcard_constraints:
        mode="score|rank",
    params:
        reference=config["align"]["reference"],
    conda:
        ENV
    log:
        "results/logs/annotate/{dataset}_{mode}.log",
    benchmark:
        "results/benchmarks/annotate/{dataset}_{mode}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "samdpo align annotate --store $(dirname {input.table}) --candidates $(dirname {input.levels})"
        " --out {output} --mode {wildcards.mode} --reference {params.reference} --prompts {input.prompts} > {log} 2>&1"


rule align:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        prompts="prompts_cache/{dataset}",
        texts="results/prompts/{dataset}/text_embeddings.parquet",
        levels="results/align/{dataset}/candidates/candidates.npy",
        annotations=lambda w: f"results/align/{w.dataset}/annotations_{annotation_mode(w)}.parquet",
        model="results/stage1/{dataset}/prompt_10/model.safetensors",
        spec="results/stage1/{dataset}/prompt_10/settings.json",
        embeddings=embeddings_input,
    output:
        weights="results/align/{dataset}/{align_variant}/model.safetensors",
        settings="results/align/{dataset}/{align_variant}/settings.json",
        curve="results/align/{dataset}/{align_variant}/train_log.csv",
        plot=report(
            "results/align/{dataset}/{align_variant}/loss.png",
            caption="../report/curve.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "model": "{align_variant}", "stage": "alignment"},
        ),
    params:
        settings=stage2_settings,
        embeddings=embeddings_flag,
    conda:
        ENV
    log:
        "results/logs/align/{dataset}/{align_variant}.log",
    benchmark:
        "results/benchmarks/align/{dataset}/{align_variant}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo align train --store $(dirname {input.table}) --candidates $(dirname {input.levels})"
        " --annotations {input.annotations} --prompts {input.prompts} --texts {input.texts}"
        " --model $(dirname {input.model}) --out $(dirname {output.weights}) --settings {params.settings:q}"
        " {params.embeddings} --threads {threads} > {log} 2>&1"
