# Stage 1: CLIP text embeddings of the text prompts, the frozen SAM encoder's image embeddings
# (computed once, read by every model), SAM with fused prompts trained on the labelled split (one
# model per stage1_variants entry), the probability maps of any SAM model (stage 1 or aligned), and
# the zero-shot rows (the pretrained SAM with the human-free boxes, or with the test labels' boxes as an oracle).


rule embed_images:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
    output:
        embeddings="results/embeddings/{dataset}/embeddings.npy",
        meta="results/embeddings/{dataset}/embeddings.json",
    params:
        sam=section_json("sam"),
    conda:
        ENV
    log:
        "results/logs/embed_images/{dataset}.log",
    benchmark:
        "results/benchmarks/embed_images/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        gpu=1,
    shell:
        "samdpo train embed-images --store $(dirname {input.table}) --sam {params.sam:q}"
        " --out $(dirname {output.embeddings}) --threads {threads} > {log} 2>&1"


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
        embeddings=embeddings_input,
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
        embeddings=embeddings_flag,
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
        " {params.flags} {params.embeddings} --threads {threads} > {log} 2>&1"


rule predict_sam:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        splits="results/data/splits/{dataset}.csv",
        prompts="prompts_cache/{dataset}",
        texts="results/prompts/{dataset}/text_embeddings.parquet",
        weights="results/{stage}/{dataset}/{variant}/model.safetensors",
        settings="results/{stage}/{dataset}/{variant}/settings.json",
        embeddings=embeddings_input,
    output:
        probs="results/{stage}/{dataset}/{variant}/probs.npy",
        meta="results/{stage}/{dataset}/{variant}/probs.json",
    wildcard_constraints:
        stage="stage1|align",
    params:
        embeddings=embeddings_flag,
        splits=predicted_splits,
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
        " --splits-to-predict {params.splits} {params.embeddings} --threads {threads} > {log} 2>&1"


rule predict_zero_shot:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        splits="results/data/splits/{dataset}.csv",
        boxes=zero_shot_boxes_input,
        embeddings=embeddings_input,
    output:
        probs="results/zero_shot/{dataset}/{boxes}_box/probs.npy",
        meta="results/zero_shot/{dataset}/{boxes}_box/probs.json",
    wildcard_constraints:
        boxes="cam|gt",
    params:
        sam=section_json("sam"),
        embeddings=embeddings_flag,
        prompts=zero_shot_prompts_flag,
    conda:
        ENV
    log:
        "results/logs/predict_zero_shot/{dataset}/{boxes}.log",
    benchmark:
        "results/benchmarks/predict_zero_shot/{dataset}/{boxes}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        gpu=1,
    shell:
        "samdpo train zero-shot --store $(dirname {input.table}) --splits {input.splits} --sam {params.sam:q}"
        " --boxes {wildcards.boxes} {params.prompts} {params.embeddings} --out $(dirname {output.probs})"
        " --threads {threads} > {log} 2>&1"
