# Visual prompts without humans: the small CLIP (embedded default only), CLIP + gScoreCAM saliency,
# the anatomical prior of the labelled split, dense-CRF masks with boxes and points, their refinement
# by the pretrained SAM, and the box-quality report against the test split.


rule pretrain_clip:
    output:
        config="results/clip/{clip_name}/open_clip_config.json",
        weights="results/clip/{clip_name}/open_clip_model.safetensors",
        log="results/clip/{clip_name}/train_log.csv",
    params:
        settings=pretrain_settings,
    conda:
        ENV
    log:
        "results/logs/pretrain_clip/{clip_name}.log",
    benchmark:
        "results/benchmarks/pretrain_clip/{clip_name}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo clip pretrain --out $(dirname {output.config}) --settings {params.settings:q}"
        " --threads {threads} > {log} 2>&1"


rule saliency:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        clip=clip_files,
    output:
        maps="results/prompts/{dataset}/saliency.npy",
        meta="results/prompts/{dataset}/saliency.json",
    params:
        clip=clip_id,
        prompts=prompt_settings,
        settings=section_json("saliency"),
    conda:
        ENV
    log:
        "results/logs/saliency/{dataset}.log",
    benchmark:
        "results/benchmarks/saliency/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo prompts saliency --store $(dirname {input.table})"
        " --out $(dirname {output.maps}) --clip {params.clip:q} --prompts {params.prompts:q}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule anatomy_prior:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
    output:
        "results/prompts/{dataset}/anatomy_prior.npz",
    params:
        settings=anatomy_settings,
    conda:
        ENV
    log:
        "results/logs/anatomy_prior/{dataset}.log",
    benchmark:
        "results/benchmarks/anatomy_prior/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo prompts anatomy-prior --store $(dirname {input.table}) --splits {input.splits}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"


rule crf:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        maps="results/prompts/{dataset}/saliency.npy",
        meta="results/prompts/{dataset}/saliency.json",
        prior=anatomy_prior_input,
    output:
        "results/prompts/{dataset}/crf.parquet",
    params:
        crf=section_json("crf"),
        boxes=section_json("boxes"),
        prior=lambda wildcards, input: f"--prior {input.prior}" if input.prior else "",
    conda:
        ENV
    log:
        "results/logs/crf/{dataset}.log",
    benchmark:
        "results/benchmarks/crf/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
    shell:
        "samdpo prompts crf --store $(dirname {input.table}) --saliency $(dirname {input.maps}) --out {output}"
        " --crf {params.crf:q} --boxes {params.boxes:q} {params.prior} --threads {threads} > {log} 2>&1"


rule refine_boxes:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        maps="results/prompts/{dataset}/saliency.npy",
        meta="results/prompts/{dataset}/saliency.json",
        crf="results/prompts/{dataset}/crf.parquet",
        embeddings="results/embeddings/{dataset}/embeddings.npy",
        embeddings_meta="results/embeddings/{dataset}/embeddings.json",
    output:
        "results/prompts/{dataset}/refined.parquet",
    params:
        sam=section_json("sam"),
        boxes=section_json("boxes"),
        settings=refine_settings,
    conda:
        ENV
    log:
        "results/logs/refine_boxes/{dataset}.log",
    benchmark:
        "results/benchmarks/refine_boxes/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=3000,
    shell:
        "samdpo prompts refine --store $(dirname {input.table}) --saliency $(dirname {input.maps}) --crf {input.crf}"
        " --embeddings $(dirname {input.embeddings}) --sam {params.sam:q} --boxes {params.boxes:q} --settings {params.settings:q}"
        " --out {output} --threads {threads} > {log} 2>&1"


rule box_quality:
    input:
        crf="results/prompts/{dataset}/crf.parquet",
        refined=refined_table,
        table="results/data/prepared/{dataset}/samples.parquet",
        labels="results/data/prepared/{dataset}/labels.npy",
        splits="results/data/splits/{dataset}.csv",
    output:
        "results/prompts/{dataset}/box_quality.csv",
    conda:
        ENV
    log:
        "results/logs/box_quality/{dataset}.log",
    benchmark:
        "results/benchmarks/box_quality/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        refined=lambda wildcards, input: f"--refined {input.refined}" if input.refined else "",
    shell:
        "samdpo box-quality --store $(dirname {input.table}) --splits {input.splits}"
        " --crf {input.crf} {params.refined} --out {output} > {log} 2>&1"


rule saliency_check:
    input:
        maps="results/prompts/{dataset}/saliency.npy",
        meta="results/prompts/{dataset}/saliency.json",
    output:
        "results/prompts/{dataset}/saliency_check.csv",
    conda:
        ENV
    log:
        "results/logs/saliency_check/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo prompts saliency-check --saliency $(dirname {input.maps}) --out {output} > {log} 2>&1"
