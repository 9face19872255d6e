"""Figures in the style of the paper's Figs. 1-5 (matplotlib, Agg backend, written to files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def trajectory_figure(
    path: Path,
    forward: list[np.ndarray],
    reverse: list[np.ndarray],
    drift: list[tuple[np.ndarray, np.ndarray]],
    labels: list[str],
    lim: float = 2.5,
    title: str | None = None,
) -> None:
    """Fig. 1 style: rows are the forward trajectory, the reverse trajectory and the drift.

    Args:
      forward, reverse: per column, points of shape (N, 2).
      drift: per column, (grid points (M, 2), drift vectors f_mu(x, t) - x (M, 2)).
      labels: per column, the time label, e.g. "t = 0".
    """
    cols = len(labels)
    fig, axes = plt.subplots(3, cols, figsize=(3.2 * cols, 9.6), squeeze=False)
    rows = ("forward q(x^(t))", "reverse p(x^(t))", "drift f_mu(x^(t), t) - x^(t)")
    for j in range(cols):
        axes[0, j].scatter(forward[j][:, 0], forward[j][:, 1], s=1.0, alpha=0.5, color="tab:blue")
        axes[1, j].scatter(reverse[j][:, 0], reverse[j][:, 1], s=1.0, alpha=0.5, color="tab:red")
        grid, vec = drift[j]
        axes[2, j].quiver(
            grid[:, 0], grid[:, 1], vec[:, 0], vec[:, 1], angles="xy", color="tab:green"
        )
        axes[0, j].set_title(labels[j])
        for i in range(3):
            axes[i, j].set_xlim(-lim, lim)
            axes[i, j].set_ylim(-lim, lim)
            axes[i, j].set_aspect("equal")
            if j == 0:
                axes[i, j].set_ylabel(rows[i])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kl_per_step_figure(
    path: Path, model_kl: np.ndarray, ceiling_kl: np.ndarray, betas: np.ndarray, title: str = ""
) -> None:
    """Per-step KL terms of Eq. 14 (bits) for the model and the best Gaussian kernel, and beta_t."""
    t = np.arange(2, len(model_kl) + 2)
    fig, (ax_kl, ax_beta) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_kl.plot(t, model_kl, "o-", ms=3, label="trained model")
    ax_kl.plot(t, ceiling_kl, "s-", ms=3, label="best Gaussian kernel (ceiling)")
    ax_kl.set_yscale("log")
    ax_kl.set_ylabel("E[KL_t] (bits per example)")
    ax_kl.legend()
    ax_kl.set_title(title)
    ax_beta.semilogy(np.arange(1, len(betas) + 1), betas, "o-", ms=3, color="tab:gray")
    ax_beta.set_xlabel("t")
    ax_beta.set_ylabel("beta_t")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heartbeat_figure(path: Path, samples: np.ndarray, noise: np.ndarray) -> None:
    """Fig. 2 style: generated binary sequences (left) next to the initial noise x^(T) (right).

    Each sample row is rolled so that its first pulse sits in the first column,
    as in the paper; rows without a pulse are left as they are.
    """
    shifted = np.array(
        [np.roll(row, -int(np.argmax(row))) if row.any() else row for row in samples]
    )
    fig, (ax_s, ax_n) = plt.subplots(1, 2, figsize=(8, 0.15 * len(samples) + 1.5))
    ax_s.imshow(shifted, cmap="gray_r", aspect="auto", interpolation="nearest")
    ax_s.set_title("samples p(x^(0)), shifted to the first pulse")
    ax_n.imshow(noise, cmap="gray_r", aspect="auto", interpolation="nearest")
    ax_n.set_title("initial noise x^(T)")
    for ax in (ax_s, ax_n):
        ax.set_xlabel("bin")
        ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(path: Path, images: np.ndarray, title: str | None = None) -> None:
    """App. Fig. 1 style: a square-ish grid of images (N, H, W, C) with values in [0, 1].

    Values are clipped to [0, 1]; one channel is shown in grey, three as RGB.
    """
    images = np.clip(np.asarray(images, np.float64), 0.0, 1.0)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3), got shape {images.shape}.")
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c))
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = image
    fig, ax = plt.subplots(figsize=(0.5 * cols + 1, 0.5 * rows + 1))
    if c == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_rows(path: Path, rows: list[tuple[str, np.ndarray]], title: str | None = None) -> None:
    """Figs. 3 and 5 style: labelled rows of images (each (N, H, W, C), values in [0, 1]).

    Row i shows its N images left to right under its label; values are clipped to [0, 1].
    """
    if not rows:
        raise ValueError("image_rows needs at least one row.")
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.2 * cols + 0.5, 1.35 * len(rows) + 0.5), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        images = np.clip(np.asarray(images, np.float64), 0.0, 1.0)
        for c in range(cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(images):
                continue
            image = images[c]
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(image, interpolation="nearest")
        axes[r, 0].set_title(label, loc="left", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
