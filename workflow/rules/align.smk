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
        uncertainty=uncertainty_inputs,
    output:
        "results/align/{dataset}/annotations_{mode}.parquet",
    wildcard_constraints:
        mode="score|rank",
    params:
        settings=annotator_settings,
        flags=annotator_flags,
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
        " --out {output} --mode {wildcards.mode} {params.flags} --prompts {input.prompts} > {log} 2>&1"


rule align:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
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
        " --splits {input.splits} {params.embeddings} --threads {threads} > {log} 2>&1"


rule alignment_study:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
        prompts="prompts_cache/{dataset}",
        texts="results/prompts/{dataset}/text_embeddings.parquet",
        model="results/stage1/{dataset}/prompt_10/model.safetensors",
        probs="results/stage1/{dataset}/prompt_10/probs.npy",
        embeddings="results/embeddings/{dataset}/embeddings.npy",
    output:
        csv="results/{dataset}_alignment_study.csv",
        md="results/{dataset}_alignment_study.md",
    params:
        study=study_settings,
        splits=lambda w: json.dumps(config["splits"], sort_keys=True),
        seeds=lambda w: " ".join(str(s) for s in {**config["study"], **config["datasets"][w.dataset]["study"]}["seeds"]),
        uncertainty=lambda w: json.dumps(config["align"]["uncertainty"], sort_keys=True),
        evaluation=config["evaluation"],
        provenance=provenance,
    conda:
        ENV
    log:
        "results/logs/alignment_study/{dataset}.log",
    benchmark:
        "results/benchmarks/alignment_study/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
    shell:
        "samdpo align study --store $(dirname {input.table}) --splits {input.splits} --split-settings {params.splits:q}"
        " --prompts {input.prompts} --texts {input.texts} --embeddings $(dirname {input.embeddings}) --model $(dirname {input.model})"
        " --study {params.study:q} --seeds {params.seeds} --uncertainty {params.uncertainty:q}"
        " --threshold {params.evaluation[threshold]} --tolerance-mm {params.evaluation[tolerance_mm]}"
        " --provenance {params.provenance:q} --out {output.csv} --threads {threads} > {log} 2>&1"
