# Visual prompts without humans: the small CLIP (embedded default only), CLIP + gScoreCAM saliency,
# dense-CRF masks with boxes and points, and the box-quality report against the test split.


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


rule crf:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
        images="results/data/prepared/{dataset}/images.npy",
        maps="results/prompts/{dataset}/saliency.npy",
        meta="results/prompts/{dataset}/saliency.json",
    output:
        "results/prompts/{dataset}/crf.parquet",
    params:
        crf=section_json("crf"),
        boxes=section_json("boxes"),
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
        " --crf {params.crf:q} --boxes {params.boxes:q} --threads {threads} > {log} 2>&1"


rule box_quality:
    input:
        crf="results/prompts/{dataset}/crf.parquet",
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
    shell:
        "samdpo prompts box-quality --store $(dirname {input.table}) --splits {input.splits}"
        " --crf {input.crf} --out {output} > {log} 2>&1"
