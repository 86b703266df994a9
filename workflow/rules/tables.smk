# Results tables. The evaluation behind them is not implemented yet: the rule exists so the DAG of
# the main target resolves (`snakemake -n results/amos_table.csv` shows the data rules), and running
# it stops with a message saying so.


rule results_table:
    input:
        splits="results/data/splits/{dataset}.csv",
        table="results/data/prepared/{dataset}/samples.parquet",
    output:
        "results/{dataset}_table.csv",
    conda:
        ENV
    log:
        "results/logs/results_table/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "samdpo table --dataset {wildcards.dataset} > {log} 2>&1"
