# Data: synthetic phantoms (when configured), the prepared 2D sample store, case-level splits.


rule synth_dataset:
    output:
        directory(SYNTHETIC),
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
        images=STORE.images,
        labels=STORE.labels,
        table=STORE.table,
    params:
        store=folder_of("table", "output"),
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
        "samdpo data prepare --kind {wildcards.dataset} --root {input.root:q} --out {params.store}"
        " --image-size {params.image_size} --settings {params.settings:q} > {log} 2>&1"


rule split_cases:
    input:
        table=STORE.table,
    output:
        SPLITS,
    params:
        store=folder_of("table"),
        labeled=config["splits"]["labeled"],
        unlabeled=config["splits"]["unlabeled"],
        validation=config["splits"]["validation"],
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
        "samdpo data split --store {params.store} --out {output}"
        " --labeled {params.labeled} --unlabeled {params.unlabeled} --validation {params.validation}"
        " --seed {params.seed} > {log} 2>&1"


rule data_summary:
    input:
        root=dataset_root,
    output:
        DATA_SUMMARY,
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
