# Example overlays for `snakemake --report report.html`: prompts, the graded candidates and the
# prediction before (the align.start_from model) and after alignment (report.after), for a few
# unlabelled (image, class) pairs.


rule overlays:
    input:
        prompts=PROMPT_STORE,
        levels=CANDIDATES.levels,
        annotations=fill(ANNOTATIONS, mode=config["align"]["variants"][config["report"]["after"]]["mode"]),
        before=START.probs,
        after=fill(ALIGNED.probs, align_variant=config["report"]["after"]),
    output:
        report(
            OVERLAYS,
            caption="../report/overlays.rst",
            category="Examples",
            labels={"dataset": "{dataset}", "figure": "overlays"},
        ),
    params:
        candidates=folder_of("levels"),
        before=folder_of("before"),
        after=folder_of("after"),
        threshold=config["evaluation"]["threshold"],
        examples=config["report"]["examples"],
    conda:
        ENV
    log:
        "results/logs/overlays/{dataset}.log",
    benchmark:
        "results/benchmarks/overlays/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
    shell:
        "samdpo overlays --prompts {input.prompts} --candidates {params.candidates} --annotations {input.annotations}"
        " --before {params.before} --after {params.after} --threshold {params.threshold}"
        " --examples {params.examples} --out {output} > {log} 2>&1"
