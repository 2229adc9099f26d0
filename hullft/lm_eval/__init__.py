"""Test-time finetuning inside lm-evaluation-harness:  python -m hullft.lm_eval --tasks ... selector=nn budget=8

    model.py      HullftLM, the harness as an lm-eval model (registered as `hullft`)
    requests.py   lm-eval's request types as query runs: continuations scored, or generated, after adapting
    leakage.py    the rule that keeps a document out of its own adaptation
    tasks.py      a local lm-eval task over your own documents
    __main__.py   the command: lm-eval's own CLI, with the model registered and Hydra overrides passed to it
"""
