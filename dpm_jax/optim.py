"""Optional learning-rate warmup and gradient clipping around any optax optimiser."""

from __future__ import annotations

import optax


def warmup_factor(warmup_steps: int) -> optax.Schedule:
    """``min(1, (step + 1) / warmup_steps)``: a linear ramp reaching 1 at step ``warmup_steps - 1``."""
    ramp = optax.linear_schedule(0.0, 1.0, transition_steps=int(warmup_steps))
    return lambda step: ramp(step + 1)


def with_warmup_and_clipping(
    tx: optax.GradientTransformation, *, warmup_steps: int = 0, clip_norm: float = 0.0
) -> optax.GradientTransformation:
    """``tx`` with its gradients clipped to global norm ``clip_norm`` and its updates warmed up.

    Clipping (``optax.clip_by_global_norm``) acts on the gradients before ``tx``; the
    warmup multiplies ``tx``'s updates by :func:`warmup_factor` over the first
    ``warmup_steps`` updates (``optax.scale_by_schedule``), which for SGD, Adam and
    RMSProp is the learning rate ramping up linearly from ``1/warmup_steps`` of its
    value; the learning-rate schedule inside ``tx`` keeps its own timing. Counts are
    optimiser updates: skipped non-finite steps do not advance them. With both at 0 (the
    defaults) ``tx`` is returned unchanged, so runs and checkpoints are as without them.
    """
    if int(warmup_steps) < 0:
        raise ValueError(f"warmup_steps must be >= 0 (0 turns warmup off), got {warmup_steps}.")
    if float(clip_norm) < 0:
        raise ValueError(f"grad_clip_norm must be >= 0 (0 turns clipping off), got {clip_norm}.")
    parts = []
    if clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(clip_norm)))
    parts.append(tx)
    if warmup_steps > 0:
        parts.append(optax.scale_by_schedule(warmup_factor(warmup_steps)))
    return tx if len(parts) == 1 else optax.chain(*parts)
