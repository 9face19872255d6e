"""Training batches of an image source: a pure function of (seed, step).

Any *source* with ``__len__`` and ``__getitem__`` (optionally ``__getitems__``) returning
dicts with an ``"image"`` key works (``dpm_jax.data.images``). Epoch ``e = step //
steps_per_epoch`` uses the permutation ``np.random.default_rng([seed, e]).permutation(n)``
and the ragged tail of each epoch is dropped, so a run resumed at step s sees the batch an
uninterrupted run would. Evaluation reads sources through ``gather_images``
(``dpm_jax.evaluation`` batches them).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full training batches per epoch, ``num_examples // batch_size`` (the tail is dropped)."""
    num_examples = _check_positive_int(num_examples, "num_examples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {num_examples} training examples; "
            "use a smaller batch."
        )
    return num_examples // batch_size


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the examples in ``epoch``: ``default_rng([seed, epoch]).permutation(n)``."""
    num_examples = _check_positive_int(num_examples, "num_examples")
    seed = _check_seed(seed)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    return np.random.default_rng([seed, int(epoch)]).permutation(num_examples)


def train_batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices (batch_size,) of the examples in training step ``step`` (0-based)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, within = divmod(int(step), per_epoch)
    perm = epoch_permutation(num_examples, seed, epoch)
    return perm[within * batch_size : (within + 1) * batch_size]


def _read_examples(source, indices) -> list:
    """The examples of ``source`` at ``indices``, in that order: ``source.__getitems__`` (one
    batched read) when it exists, else ``source[i]``."""
    keys = [int(i) for i in np.asarray(indices).reshape(-1)]
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(keys) if getitems is not None else [source[i] for i in keys]
    if len(examples) != len(keys):
        raise ValueError(f"source returned {len(examples)} examples for {len(keys)} indices.")
    return examples


def _stack_images(examples) -> np.ndarray:
    """uint8 images (n, H, W, C) of the examples' ``"image"``, checked."""
    arrays = [np.asarray(ex["image"]) for ex in examples]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in one batch differ in shape: {sorted(shapes)}.")
    batch = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 0), np.uint8)
    if batch.ndim != 4 or batch.dtype != np.uint8:
        raise ValueError(
            f"source images must be uint8 of shape (H, W, C); got dtype {batch.dtype} and "
            f"shape {batch.shape[1:]} per example."
        )
    return batch


def gather_images(source, indices) -> np.ndarray:
    """uint8 images (len(indices), H, W, C) of ``source`` at ``indices``, in that order.

    Uses ``source.__getitems__`` (one batched read) when it exists, else ``source[i]``.
    """
    return _stack_images(_read_examples(source, indices))


def gather_labelled(source, indices) -> dict:
    """{"image": uint8 (n, H, W, C), "label": int32 (n,)} of ``source`` at ``indices``, from
    one read of the examples (labels 0 where the source has none: callers that need them
    check the source first)."""
    examples = _read_examples(source, indices)
    labels = np.asarray([int(ex.get("label", 0)) for ex in examples], np.int32)
    return {"image": _stack_images(examples), "label": labels}


def train_batch(source, batch_size: int, seed: int, step: int) -> np.ndarray:
    """uint8 training batch (batch_size, H, W, C) for ``step``; a pure function of its inputs."""
    return gather_images(source, train_batch_indices(len(source), batch_size, seed, step))


def train_batches(
    source, batch_size: int, seed: int, start_step: int = 0, num_steps: int | None = None
) -> Iterator[np.ndarray]:
    """Yields ``train_batch(source, batch_size, seed, step)`` for step = start_step, ...

    Endless when ``num_steps`` is None. Only one batch of images is in memory at a time; the
    epoch permutation (int64, n entries) is computed once per epoch.
    """
    num_examples = len(source)
    per_epoch = steps_per_epoch(num_examples, batch_size)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    step, end = int(start_step), None if num_steps is None else int(start_step) + num_steps
    epoch, perm = None, None
    while end is None or step < end:
        e, within = divmod(step, per_epoch)
        if e != epoch:
            epoch, perm = e, epoch_permutation(num_examples, seed, e)
        yield gather_images(source, perm[within * batch_size : (within + 1) * batch_size])
        step += 1
