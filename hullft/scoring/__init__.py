"""Bits per byte of a query document.

    bpb.py           lm-eval's rolling windows, first_window, score_text
    base_score.py    the base model's scores, cached per model, dtype and eval config
"""
