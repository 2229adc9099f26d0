"""Captured graphs checked against eager before they are trusted: a GPU user's first run must not hang on, or
silently compute with, a graph that never ran on their GPU.

The first capture of each shape (a training step's length bucket, a scoring window's) is run once on a probe
sequence of that bucket, seeded, and compared with the same computation run eagerly: the loss, the gradient
norm and every gradient for a step; the logits for a scoring window. Relative error (the difference's norm over
the eager value's) within 1e-5 in fp32 and 1e-2 in bf16 passes. A mismatch, or an error while capturing,
raises `CaptureFailed`; the engine then runs the job's steps eagerly and the scoring forward scores eagerly,
each saying so in one line.

A model that trains with dropout draws different random numbers in a graph than eagerly, so its training
step cannot be compared; its scoring windows (dropout is off in eval mode) still are.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import torch

from hullft.config import DType
from hullft.engine.train_steps import bucket_length, loss_and_gradients, padded

TOLERANCE = {DType.fp32: 1e-5, DType.bf16: 1e-2}
PROBE_SEED = 0


class CaptureFailed(RuntimeError):
    """A captured graph that failed to capture or disagreed with eager; the message says which and by how much."""


def relative_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over all the tensors as one vector (0 where both are zero)."""
    diff = sum(float(((g.float() - w.float()) ** 2).sum()) for g, w in zip(got, want)) ** 0.5
    size = sum(float((w.float() ** 2).sum()) for w in want) ** 0.5
    return diff / size if size else diff


def probe_sequence(length: int, bucket: int, context: int, vocab: int) -> List[int]:
    """Seeded tokens, shorter than `length` where a shorter sequence falls in the same bucket (so the padding
    is checked too)."""
    size = max(2, length - bucket // 2)
    if bucket_length(size, bucket, context) != length:
        size = length
    g = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randint(0, vocab, (size,), generator=g).tolist()


def trains_with_dropout(model) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def vocab_size(model) -> int:
    return int(model.get_input_embeddings().num_embeddings)


def capturing(what: str, capture: Callable):
    """capture(), with any error it raises turned into CaptureFailed naming `what`."""
    try:
        return capture()
    except Exception as e:  # noqa: BLE001 - any failure to capture means: run eagerly
        message = (str(e).splitlines() or [""])[0]
        raise CaptureFailed(f"capturing {what} failed ({type(e).__name__}: {message})") from e


def check_step(steps, length: int) -> None:
    """The captured forward/backward of `length`'s bucket against eager on a probe (`steps`: CapturedSteps)."""
    probe = probe_sequence(length, steps.cfg.bucket, steps.context, vocab_size(steps.model))
    ids = torch.tensor([probe], device=steps.device)
    torch._foreach_zero_(steps.grads)
    loss, norm = loss_and_gradients(steps.model, ids, None, ids, steps.params, steps.dtype, steps.cfg.max_grad_norm)
    eager = [torch.stack([loss.float(), norm.float()])] + [g.clone() for g in steps.grads]
    padded_ids, labels = padded(probe, length)
    static_ids, static_labels = steps.buffers[length]
    static_ids.copy_(padded_ids)
    static_labels.copy_(labels)
    graph = [steps.graphs[length].replay().clone()] + list(steps.grads)
    error = relative_error(graph, eager)
    torch._foreach_zero_(steps.grads)
    if not error <= TOLERANCE[steps.dtype]:
        raise CaptureFailed(f"the captured {length}-token training step differs from eager by {error:.2e} "
                            f"(relative; the bound is {TOLERANCE[steps.dtype]:.0e} in {steps.dtype.value})")


def check_logits(forward, length: int, ids: torch.Tensor, recorded) -> None:
    """A captured scoring window of `length` tokens against eager on a probe (`forward`: CapturedLogits)."""
    probe = probe_sequence(length, forward.bucket, forward.context, vocab_size(forward.model))
    was_training = forward.model.training
    forward.model.eval()
    with torch.no_grad():
        with torch.autocast(forward.device.type, dtype=torch.bfloat16, enabled=forward.dtype == DType.bf16):
            eager = forward.model(input_ids=torch.tensor([probe], device=forward.device)).logits[0]
        ids.zero_()
        ids[0, :len(probe)] = torch.tensor(probe, device=forward.device)
        graph = recorded.replay()[:len(probe)]
        error = relative_error([graph], [eager])
    forward.model.train(was_training)
    if not error <= TOLERANCE[forward.dtype]:
        raise CaptureFailed(f"the captured {length}-token scoring window differs from eager by {error:.2e} "
                            f"(relative; the bound is {TOLERANCE[forward.dtype]:.0e} in {forward.dtype.value})")
