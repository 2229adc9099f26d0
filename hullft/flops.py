"""FLOPs of a query's work, so a GPU reader can translate this machine's seconds.

A forward pass over T tokens costs 2 * P * T (every parameter a multiply-add per token; with tied embeddings the
output projection is counted once, as it is computed once) plus attention's 2 * n_layer * d * T^2 (scores and
weighted sum, causal); a training pass costs three forwards. Norms, activations and softmax are left out.
"""
from __future__ import annotations


def forward_flops(model, tokens: int, token_pairs: int) -> float:
    """FLOPs of forwards over `tokens` positions in all whose lengths' squares sum to `token_pairs`. (Counting
    the parameters walks a few hundred tensors: microseconds, twice a query.)"""
    params = sum(p.numel() for p in model.parameters())
    return 2.0 * params * tokens + 2.0 * model.config.num_hidden_layers * model.config.hidden_size * token_pairs
