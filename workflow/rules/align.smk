# Preference alignment: candidates from the align.start_from model's probabilities on the unlabelled
# split, the annotator's grades or order (the only rule besides evaluation that reads unlabelled labels,
# with reference ground_truth), and stage 2 per align.variants entry.


rule candidates:
    input:
        probs=START.probs,
        meta=START.probs_meta,
        table=STORE.table,
        prompts=PROMPT_STORE,
        model=candidate_inputs,
    output:
        levels=CANDIDATES.levels,
        meta=CANDIDATES.meta,
    params:
        probs=folder_of("probs"),
        folder=folder_of("levels", "output"),
        settings=json.dumps(config["align"]["candidates"], sort_keys=True),
        flags=candidate_flags,
    conda:
        ENV
    log:
        "results/logs/candidates/{dataset}.log",
    benchmark:
        "results/benchmarks/candidates/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
    shell:
        "samdpo align candidates --probs {params.probs} --out {params.folder}"
        " --settings {params.settings:q} {params.flags} --threads {threads} > {log} 2>&1"


rule annotate:
    input:
        table=STORE.table,
        labels=STORE.labels,
        prompts=PROMPT_STORE,
        levels=CANDIDATES.levels,
        meta=CANDIDATES.meta,
        uncertainty=uncertainty_inputs,
        human=human_decisions,
    output:
        ANNOTATIONS,
    wildcard_constraints:
        mode="score|rank",
    params:
        store=folder_of("table"),
        candidates=folder_of("levels"),
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
        "samdpo align annotate --store {params.store} --candidates {params.candidates}"
        " --out {output} --mode {wildcards.mode} {params.flags} --prompts {input.prompts} > {log} 2>&1"


rule align:
    input:
        table=STORE.table,
        images=STORE.images,
        labels=STORE.labels,
        splits=SPLITS,
        prompts=PROMPT_STORE,
        texts=PROMPTS.texts,
        levels=CANDIDATES.levels,
        annotations=lambda w: fill(ANNOTATIONS, dataset=w.dataset, mode=annotation_mode(w)),
        model=START.weights,
        spec=START.settings,
        embeddings=embeddings_input,
    output:
        weights=ALIGNED.weights,
        settings=ALIGNED.settings,
        curve=ALIGNED.curve,
        plot=report(
            ALIGNED.plot,
            caption="../report/curve.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "model": "{align_variant}", "stage": "alignment"},
        ),
    params:
        store=folder_of("table"),
        candidates=folder_of("levels"),
        model=folder_of("model"),
        folder=folder_of("weights", "output"),
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
        "samdpo align train --store {params.store} --candidates {params.candidates}"
        " --annotations {input.annotations} --prompts {input.prompts} --texts {input.texts}"
        " --model {params.model} --out {params.folder} --settings {params.settings:q}"
        " --splits {input.splits} {params.embeddings} --threads {threads} > {log} 2>&1"


rule alignment_study:
    input:
        table=STORE.table,
        images=STORE.images,
        labels=STORE.labels,
        splits=SPLITS,
        prompts=PROMPT_STORE,
        texts=PROMPTS.texts,
        model=START.weights,
        probs=START.probs,
        embeddings=EMBEDDINGS.embeddings,
    output:
        csv=f"{STUDY}.csv",
        md=f"{STUDY}.md",
        choice=f"{STUDY}_choice.json",
    params:
        store=folder_of("table"),
        model=folder_of("model"),
        embeddings=folder_of("embeddings"),
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
        "samdpo align study --store {params.store} --splits {input.splits} --split-settings {params.splits:q}"
        " --prompts {input.prompts} --texts {input.texts} --embeddings {params.embeddings} --model {params.model}"
        " --study {params.study:q} --seeds {params.seeds} --uncertainty {params.uncertainty:q}"
        " --threshold {params.evaluation[threshold]} --tolerance-mm {params.evaluation[tolerance_mm]}"
        " --provenance {params.provenance:q} --out {output.csv} --threads {threads} > {log} 2>&1"
