"""Tables and plots from the records of runs:  python -m hullft.report <dirs> --out <dir>

    configurations.py  which configuration each record measured, and the label telling it apart
    loading.py         records files read into one frame, de-duplicated, with their settings
    intervals.py       the statistics of a paired difference: stratified t interval, p-value, Holm
    tables.py          per-domain, paired and per-configuration (Pareto point) tables
    plots.py           the Pareto plot
    sigma_gain.py      sigma against realised gain
    cli.py             the command: every table and plot written to one folder
"""
