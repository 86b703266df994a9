# Stage 1: CLIP text embeddings of the text prompts, the frozen SAM encoder's image embeddings
# (computed once, read by every model), SAM with fused prompts trained on the labelled split (one
# model per stage1_variants entry), the probability maps of any SAM model (stage 1 or aligned), and
# the zero-shot rows (the pretrained SAM with the human-free boxes, or with the test labels' boxes as an oracle),
# and a model's prompt recipe, which `samdpo segment` reads to segment a new image with it.


rule embed_images:
    input:
        table=STORE.table,
        images=STORE.images,
    output:
        embeddings=EMBEDDINGS.embeddings,
        meta=EMBEDDINGS.meta,
    params:
        store=folder_of("table"),
        folder=folder_of("embeddings", "output"),
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
        "samdpo train embed-images --store {params.store} --sam {params.sam:q}"
        " --out {params.folder} --threads {threads} > {log} 2>&1"


rule embed_texts:
    input:
        table=STORE.table,
        prompts=PROMPT_STORE,
        clip=clip_files,
    output:
        PROMPTS.texts,
    params:
        store=folder_of("table"),
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
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 samdpo train embed-texts --store {params.store}"
        " --prompts {input.prompts} --clip {params.clip:q} --out {output} --threads {threads} > {log} 2>&1"


rule train_stage1:
    input:
        table=STORE.table,
        images=STORE.images,
        labels=STORE.labels,
        splits=SPLITS,
        prompts=PROMPT_STORE,
        texts=PROMPTS.texts,
        embeddings=embeddings_input,
    output:
        weights=STAGE1.weights,
        settings=STAGE1.settings,
        curve=STAGE1.curve,
        plot=report(
            STAGE1.plot,
            caption="../report/curve.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "model": "{variant}", "stage": "stage 1"},
        ),
    params:
        store=folder_of("table"),
        folder=folder_of("weights", "output"),
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
        "{params.launcher} train stage1 --store {params.store} --splits {input.splits} --prompts {input.prompts}"
        " --texts {input.texts} --out {params.folder} --sam {params.sam:q} --settings {params.settings:q}"
        " {params.flags} {params.embeddings} --threads {threads} > {log} 2>&1"


rule predict_sam:
    input:
        table=STORE.table,
        images=STORE.images,
        splits=SPLITS,
        prompts=PROMPT_STORE,
        texts=PROMPTS.texts,
        weights=SAM_MODEL.weights,
        settings=SAM_MODEL.settings,
        embeddings=embeddings_input,
    output:
        probs=SAM_MODEL.probs,
        meta=SAM_MODEL.probs_meta,
    wildcard_constraints:
        stage="stage1|align",
    params:
        store=folder_of("table"),
        model=folder_of("weights"),
        folder=folder_of("probs", "output"),
        embeddings=embeddings_flag,
        splits=predicted_splits,
        settings=predict_settings,
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
        "samdpo train predict --store {params.store} --splits {input.splits} --prompts {input.prompts}"
        " --texts {input.texts} --model {params.model} --out {params.folder}"
        " --splits-to-predict {params.splits} --settings {params.settings:q} {params.embeddings}"
        " --threads {threads} > {log} 2>&1"


rule predict_zero_shot:
    input:
        table=STORE.table,
        images=STORE.images,
        splits=SPLITS,
        boxes=zero_shot_boxes_input,
        embeddings=embeddings_input,
    output:
        probs=ZERO_SHOT_MODEL.probs,
        meta=ZERO_SHOT_MODEL.probs_meta,
    wildcard_constraints:
        boxes="cam|gt",
    params:
        store=folder_of("table"),
        folder=folder_of("probs", "output"),
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
        "samdpo train zero-shot --store {params.store} --splits {input.splits} --sam {params.sam:q}"
        " --boxes {wildcards.boxes} {params.prompts} {params.embeddings} --out {params.folder}"
        " --threads {threads} > {log} 2>&1"


rule model_recipe:
    input:
        table=STORE.table,
        settings=SAM_MODEL.settings,
        weights=SAM_MODEL.weights,
        prior=anatomy_prior_input,
        presence=presence_input,
        clip=clip_files,
    output:
        directory(SAM_MODEL.recipe),
    wildcard_constraints:
        stage="stage1|align",
    params:
        store=folder_of("table"),
        model=folder_of("settings"),
        clip=clip_id,
        clip_folder=clip_folder_flag,
        prior=option("prior"),
        presence=option("presence"),
        settings=recipe_settings,
    conda:
        ENV
    log:
        "results/logs/model_recipe/{stage}/{dataset}/{variant}.log",
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo recipe --model {params.model} --store {params.store} --clip {params.clip:q} {params.clip_folder}"
        " {params.prior} {params.presence} --settings {params.settings:q} --out {output} > {log} 2>&1"
