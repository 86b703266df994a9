# Example overlays for `snakemake --report report.html`: prompts, the graded candidates and the
# prediction before and after alignment, for a few unlabelled (image, class) pairs.


rule overlays:
    input:
        prompts="prompts_cache/{dataset}",
        levels="results/align/{dataset}/candidates/candidates.npy",
        annotations=lambda w: f"results/align/{w.dataset}/annotations_{config['align']['variants'][config['report']['after']]['mode']}.parquet",
        before="results/stage1/{dataset}/prompt_10/probs.npy",
        after=lambda w: f"results/align/{w.dataset}/{config['report']['after']}/probs.npy",
    output:
        report(
            "results/report/{dataset}/overlays.png",
            caption="../report/overlays.rst",
            category="Examples",
            labels={"dataset": "{dataset}", "figure": "overlays"},
        ),
    params:
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
        "samdpo overlays --prompts {input.prompts} --candidates $(dirname {input.levels}) --annotations {input.annotations}"
        " --before $(dirname {input.before}) --after $(dirname {input.after}) --threshold {params.threshold}"
        " --examples {params.examples} --out {output} > {log} 2>&1"
