# Stage 1: CLIP text embeddings of the text prompts, SAM with fused prompts trained on the labelled
# split (one model per stage1_variants entry), and the probability maps of any SAM model (stage 1 or
# aligned) for the unlabelled and test splits.


rule embed_texts:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        prompts="prompts_cache/{dataset}",
        clip=clip_files,
    output:
        "results/prompts/{dataset}/text_embeddings.parquet",
    params:
        clip=clip_id,
    conda:
        ENV
    log:
        "results/logs/embed_texts/{dataset}.log",
    benchmark:
        "results/benchmarks/embed_texts/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
    shell:
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo train embed-texts --store $(dirname {input.table})"
        " --prompts {input.prompts} --clip {params.clip:q} --out {output} --threads {threads} > {log} 2>&1"


rule train_stage1:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
        prompts="prompts_cache/{dataset}",
        texts="results/prompts/{dataset}/text_embeddings.parquet",
    output:
        weights="results/stage1/{dataset}/{variant}/model.safetensors",
        settings="results/stage1/{dataset}/{variant}/settings.json",
        curve="results/stage1/{dataset}/{variant}/loss.csv",
        plot=report(
            "results/stage1/{dataset}/{variant}/loss.png",
            caption="../report/curve.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "model": "{variant}", "stage": "stage 1"},
        ),
    params:
        sam=section_json("sam"),
        settings=stage1_settings,
        flags=stage1_flags,
        launcher=launcher,
    conda:
        ENV
    log:
        "results/logs/train_stage1/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/train_stage1/{dataset}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        gpu=1,
    shell:
        "{params.launcher} train stage1 --store $(dirname {input.table}) --splits {input.splits} --prompts {input.prompts}"
        " --texts {input.texts} --out $(dirname {output.weights}) --sam {params.sam:q} --settings {params.settings:q}"
        " {params.flags} --threads {threads} > {log} 2>&1"


rule predict_sam:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        splits="results/data/splits/{dataset}.csv",
        prompts="prompts_cache/{dataset}",
        texts="results/prompts/{dataset}/text_embeddings.parquet",
        weights="results/{stage}/{dataset}/{variant}/model.safetensors",
        settings="results/{stage}/{dataset}/{variant}/settings.json",
    output:
        probs="results/{stage}/{dataset}/{variant}/probs.npy",
        meta="results/{stage}/{dataset}/{variant}/probs.json",
    wildcard_constraints:
        stage="stage1|align",
    conda:
        ENV
    log:
        "results/logs/predict/{stage}/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/predict/{stage}/{dataset}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "samdpo train predict --store $(dirname {input.table}) --splits {input.splits} --prompts {input.prompts}"
        " --texts {input.texts} --model $(dirname {input.weights}) --out $(dirname {output.probs})"
        " --threads {threads} > {log} 2>&1"
