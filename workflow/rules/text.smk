# Text prompts (VQA answers per image and class, an LLM description per class), then the merge of
# every prompt into one Parquet file per image under prompts_cache/. Model and API answers are
# cached in config["answer_cache"] (not a rule output: it outlives reruns and is never evicted).


rule vqa:
    input:
        table=STORE.table,
        images=STORE.images,
        crf=vqa_crf_table,
    output:
        PROMPTS.vqa,
    params:
        store=folder_of("table"),
        settings=section_json("vqa"),
        modality=modality,
        cache=config["answer_cache"],
        crf=option("crf"),
    conda:
        ENV
    log:
        "results/logs/vqa/{dataset}.log",
    benchmark:
        "results/benchmarks/vqa/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo prompts vqa --store {params.store} --out {output}"
        " --modality {params.modality:q} --settings {params.settings:q} --cache {params.cache:q} {params.crf}"
        " --threads {threads} > {log} 2>&1"


rule llm:
    input:
        table=STORE.table,
    output:
        PROMPTS.llm,
    params:
        store=folder_of("table"),
        settings=section_json("llm"),
        modality=modality,
        cache=config["answer_cache"],
    conda:
        ENV
    log:
        "results/logs/llm/{dataset}.log",
    benchmark:
        "results/benchmarks/llm/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo prompts llm --store {params.store} --out {output} --modality {params.modality:q}"
        " --settings {params.settings:q} --cache {params.cache:q} > {log} 2>&1"


rule prompt_store:
    input:
        table=STORE.table,
        images=STORE.images,
        maps=PROMPTS.saliency,
        meta=PROMPTS.saliency_meta,
        crf=visual_table,
        vqa=PROMPTS.vqa,
        llm=PROMPTS.llm,
        presence=presence_input,
    output:
        directory(PROMPT_STORE),
    params:
        store=folder_of("table"),
        saliency=folder_of("maps"),
        # null: the image size, the side the saliency maps are computed at (stored as they are)
        saliency_size=lambda wildcards: config["prompt_store"]["saliency_size"] or config["image_size"],
        presence=option("presence"),
    conda:
        ENV
    log:
        "results/logs/prompt_store/{dataset}.log",
    benchmark:
        "results/benchmarks/prompt_store/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "samdpo prompts store --store {params.store} --saliency {params.saliency} --crf {input.crf}"
        " --vqa {input.vqa} --llm {input.llm} --out {output} --saliency-size {params.saliency_size}"
        " {params.presence} > {log} 2>&1"
