"""Tables and plots from the records of runs:  python -m hullft.report <dirs> --out <dir>

    tables.py        per-domain tables, paired comparisons, Pareto points and plot, the CLI
    sigma_gain.py    sigma against realised gain
"""
