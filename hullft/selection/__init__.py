"""Choosing what to train on: selectors return a Multiset of candidate rows (baselines/ holds the peers).

    multiset.py      the contract between selectors and the engine
    hullft.py        HullFT: Frank-Wolfe convex reconstruction (frank_wolfe.py), integerised (integerize.py)
    posterior.py     SIFT's surrogate: the query's posterior sigma after a selection
    adaptive.py      adaptive budgets (alpha * n * sigma_n <= 1)
    timing.py        t_select, timed alike for every selector
"""
