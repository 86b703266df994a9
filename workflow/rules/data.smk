# Data: synthetic phantoms (when configured), the prepared 2D sample store, case-level splits.


rule synth_dataset:
    output:
        directory("results/data/synthetic/{dataset}"),
    params:
        args=synth_args,
    conda:
        ENV
    log:
        "results/logs/synth_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/synth_dataset/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "samdpo synth {wildcards.dataset} --out {output} {params.args} --force > {log} 2>&1"


rule prepare_samples:
    input:
        root=dataset_root,
    output:
        images="results/data/prepared/{dataset}/images.npy",
        labels="results/data/prepared/{dataset}/labels.npy",
        table="results/data/prepared/{dataset}/samples.parquet",
    params:
        settings=reader_settings,
        image_size=config["image_size"],
    conda:
        ENV
    log:
        "results/logs/prepare_samples/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_samples/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "samdpo data prepare --kind {wildcards.dataset} --root {input.root:q} --out $(dirname {output.table})"
        " --image-size {params.image_size} --settings {params.settings:q} > {log} 2>&1"


rule split_cases:
    input:
        table="results/data/prepared/{dataset}/samples.parquet",
    output:
        "results/data/splits/{dataset}.csv",
    params:
        labeled=config["splits"]["labeled"],
        unlabeled=config["splits"]["unlabeled"],
        seed=config["splits"]["seed"],
    conda:
        ENV
    log:
        "results/logs/split_cases/{dataset}.log",
    benchmark:
        "results/benchmarks/split_cases/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo data split --store $(dirname {input.table}) --out {output}"
        " --labeled {params.labeled} --unlabeled {params.unlabeled} --seed {params.seed} > {log} 2>&1"


rule data_summary:
    input:
        root=dataset_root,
    output:
        "results/data/{dataset}_summary.json",
    params:
        settings=reader_settings,
    conda:
        ENV
    log:
        "results/logs/data_summary/{dataset}.log",
    benchmark:
        "results/benchmarks/data_summary/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "samdpo data summary --kind {wildcards.dataset} --root {input.root:q} --settings {params.settings:q}"
        " --json --out {output} > {log} 2>&1"
