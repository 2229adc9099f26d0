"""The two operations the engine's step loop is made of: a forward/backward pass and an optimizer step.

`EagerSteps` runs them as plain calls (CPU, or CUDA without graphs); `compiled.CompiledSteps` runs the
forward/backward through torch.compile (CPU); `cuda_graphs.CapturedSteps` replays them as CUDA graphs. All keep
the same protocol:

    steps.prepare(lengths) -> seconds   # one-off work before a query's timed steps (compile, graph capture)
    steps.begin()                       # a fresh optimizer state for this query
    steps.forward_backward(seqs) -> (loss, grad_norm)
    steps.optimizer_step()
    steps.end()

A model whose input embedding is its output layer (SmolLM2, GPT-2) gets that weight's gradient from both: the
output layer's is dense (every row), the embedding's touches only the rows of the sequence's tokens. Autograd
would build the embedding's as a dense zero tensor of the vocabulary's size, scatter into it and add the two:
over a tenth of a fp32 step on a CPU (docs/performance.md). Eager steps ask the embedding for a sparse gradient
instead, which autograd adds into the dense one: the same sums, in another order only where a token repeats.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple

import torch

from hullft.config import DType, EngineConfig, Optimizer


def make_optimizer(cfg: EngineConfig, params, capturable: bool = False) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == Optimizer.adamw else torch.optim.Adam
    # the fused kernel (CPU and CUDA) does the whole update in one pass over the parameters
    return cls(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True, capturable=capturable)


def zero_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """In place, so the state keeps its storage: equal to a fresh optimizer (zero moments, step 0)."""
    tensors = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    if tensors:
        torch._foreach_zero_(tensors)


def loss_and_gradients(model, ids, mask, labels, params, dtype: DType, max_grad_norm: Optional[float],
                       capturing: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward (gradients accumulate into .grad), then the gradient norm and clipping.
    Clipping is applied whatever the norm: a non-finite norm stops the step loop before the update.
    Under graph capture autocast must not cache its weight casts (they would be stale on replay)."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=dtype == DType.bf16,
                        cache_enabled=not capturing):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_grad_norm, norm)
    return loss.detach(), norm


def tied_input_embedding(model) -> Optional[torch.nn.Embedding]:
    """The input embedding where its weight is also the output layer's and is trained, else None."""
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(embedding, torch.nn.Embedding) or output is None or embedding.max_norm is not None:
        return None
    weight = embedding.weight
    return embedding if weight is getattr(output, "weight", None) and weight.requires_grad else None


@contextmanager
def sparse_gradient(embedding: Optional[torch.nn.Embedding]):
    """The embedding's backward gives a sparse gradient inside the block (nothing changes for None)."""
    if embedding is None:
        yield
        return
    before, embedding.sparse = embedding.sparse, True
    try:
        yield
    finally:
        embedding.sparse = before


def bucket_length(length: int, bucket: int, cap: int) -> int:
    """The next multiple of `bucket` at or above `length`, at most `cap` (the model's context)."""
    return min(-(-length // bucket) * bucket, max(cap, length))


def padded(sequence: Sequence[int], length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(1, length) ids right-padded with 0 and labels with -100 on the padding. Under causal attention the
    real tokens' loss and gradients are those of the unpadded sequence."""
    ids = torch.zeros((1, length), dtype=torch.long)
    ids[0, :len(sequence)] = torch.tensor(sequence)
    labels = torch.full((1, length), -100, dtype=torch.long)
    labels[0, :len(sequence)] = ids[0, :len(sequence)]
    return ids, labels


class EagerSteps:
    def __init__(self, model, params, cfg: EngineConfig, dtype: DType, device: torch.device):
        self.model, self.params, self.cfg, self.dtype, self.device = model, params, cfg, dtype, device
        self.forward_model = model  # what forward/backward calls (CompiledSteps: the compiled model)
        self.optimizer = None
        self.tied_embedding = tied_input_embedding(model)
        # False gives the dense gradient: the step before 2026-12-07, a benchmark's baseline
        self.sparse_embedding_grad = self.tied_embedding is not None

    def prepare(self, lengths: Sequence[int]) -> float:
        return 0.0

    def begin(self) -> None:
        """The optimizer is made once and its state zeroed in place for every later query: allocating and
        faulting in the moments afresh made a query's first optimizer step cost about three later ones."""
        if self.optimizer is None:
            self.optimizer = make_optimizer(self.cfg, self.params)
        else:
            zero_optimizer_state(self.optimizer)

    def _batch(self, sequences: List[List[int]]):
        """Right-padded ids, attention mask and labels (-100 on padding); one sequence needs neither padding
        nor a mask (which would also keep attention off its fast causal path)."""
        if len(sequences) == 1:
            ids = torch.tensor([sequences[0]], device=self.device)
            return ids, None, ids
        longest = max(len(s) for s in sequences)
        ids = torch.zeros((len(sequences), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return ids.to(self.device), mask.to(self.device), labels.to(self.device)

    def forward_backward(self, sequences: List[List[int]]) -> Tuple[float, float]:
        for p in self.params:
            p.grad = None
        ids, mask, labels = self._batch(sequences)
        with sparse_gradient(self.tied_embedding if self.sparse_embedding_grad else None):
            loss, norm = loss_and_gradients(self.forward_model, ids, mask, labels, self.params, self.dtype,
                                            self.cfg.max_grad_norm)
        loss, norm = torch.stack([loss.float(), norm.float()]).tolist()  # one device sync
        return loss, norm

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def end(self) -> None:
        for p in self.params:
            p.grad = None

    def reset(self) -> None:
        for p in self.params:
            p.grad = None
