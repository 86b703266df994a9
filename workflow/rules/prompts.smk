# Visual prompts without humans: the small CLIP (embedded default only), CLIP + gScoreCAM saliency,
# the anatomical prior and the presence signal (where along the scan each class occurs) of the labelled
# split, dense-CRF masks with boxes and points, their refinement by the pretrained SAM, and the
# box-quality report against the test split.


rule pretrain_clip:
    output:
        directory(CLIP),
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
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo clip pretrain --out {output} --settings {params.settings:q}"
        " --threads {threads} > {log} 2>&1"


rule saliency:
    input:
        table=STORE.table,
        images=STORE.images,
        clip=clip_files,
    output:
        maps=PROMPTS.saliency,
        meta=PROMPTS.saliency_meta,
    params:
        store=folder_of("table"),
        folder=folder_of("maps", "output"),
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
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo prompts saliency --store {params.store}"
        " --out {params.folder} --clip {params.clip:q} --prompts {params.prompts:q}"
        " --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule anatomy_prior:
    input:
        table=STORE.table,
        images=STORE.images,
        labels=STORE.labels,
        splits=SPLITS,
    output:
        PROMPTS.prior,
    params:
        store=folder_of("table"),
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
        "samdpo prompts anatomy-prior --store {params.store} --splits {input.splits}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"


rule presence_prior:
    input:
        table=STORE.table,
        labels=STORE.labels,
        splits=SPLITS,
    output:
        PROMPTS.presence,
    params:
        store=folder_of("table"),
        settings=presence_settings,
    conda:
        ENV
    log:
        "results/logs/presence_prior/{dataset}.log",
    benchmark:
        "results/benchmarks/presence_prior/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo prompts presence-prior --store {params.store} --splits {input.splits}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"


rule crf:
    input:
        table=STORE.table,
        images=STORE.images,
        maps=PROMPTS.saliency,
        meta=PROMPTS.saliency_meta,
        prior=anatomy_prior_input,
    output:
        PROMPTS.crf,
    params:
        store=folder_of("table"),
        saliency=folder_of("maps"),
        crf=section_json("crf"),
        boxes=section_json("boxes"),
        prior=option("prior"),
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
        "samdpo prompts crf --store {params.store} --saliency {params.saliency} --out {output}"
        " --crf {params.crf:q} --boxes {params.boxes:q} {params.prior} --threads {threads} > {log} 2>&1"


rule refine_boxes:
    input:
        table=STORE.table,
        maps=PROMPTS.saliency,
        meta=PROMPTS.saliency_meta,
        crf=PROMPTS.crf,
        embeddings=EMBEDDINGS.embeddings,
        embeddings_meta=EMBEDDINGS.meta,
    output:
        PROMPTS.refined,
    params:
        store=folder_of("table"),
        saliency=folder_of("maps"),
        embeddings=folder_of("embeddings"),
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
        "samdpo prompts refine --store {params.store} --saliency {params.saliency} --crf {input.crf}"
        " --embeddings {params.embeddings} --sam {params.sam:q} --boxes {params.boxes:q} --settings {params.settings:q}"
        " --out {output} --threads {threads} > {log} 2>&1"


rule box_quality:
    input:
        crf=PROMPTS.crf,
        refined=refined_table,
        table=STORE.table,
        labels=STORE.labels,
        splits=SPLITS,
    output:
        PROMPTS.box_quality,
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
        store=folder_of("table"),
        refined=option("refined"),
    shell:
        "samdpo box-quality --store {params.store} --splits {input.splits}"
        " --crf {input.crf} {params.refined} --out {output} > {log} 2>&1"


rule saliency_check:
    input:
        maps=PROMPTS.saliency,
        meta=PROMPTS.saliency_meta,
    output:
        PROMPTS.saliency_check,
    params:
        saliency=folder_of("maps"),
    conda:
        ENV
    log:
        "results/logs/saliency_check/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo prompts saliency-check --saliency {params.saliency} --out {output} > {log} 2>&1"
