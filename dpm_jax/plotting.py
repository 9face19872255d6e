"""Figures in the style of the paper's Figs. 1-5 (matplotlib, Agg backend, written to files)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> None:
    """Lays ``fig`` out, writes it to ``path`` (creating its folder) at 110 dpi, closes it."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    _save(fig, path)


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
    _save(fig, path)


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
    _save(fig, path)


# The image figures are laid out in screen pixels at IMAGE_DPI, so that every image pixel
# becomes a whole square of screen pixels (nearest neighbour: no blur, no uneven columns) and
# a 16 x 16 image is as easy to read as a 32 x 32 one.
IMAGE_DPI = 110
MIN_IMAGE_PIXELS = 96  # every image shown at least this wide or high (0.87 inch at IMAGE_DPI)
MAX_COLUMNS = 8  # images per row at most; image_rows shows the first MAX_COLUMNS of each row
GAP = 6  # screen pixels between neighbouring images
ROW_GAP = 10  # and between the labelled rows of image_rows
MARGIN = 10
TITLE_HEIGHT = 34
TITLE_CHAR_WIDTH = 9  # screen pixels per character of an 11 pt title (generous)
LABEL_WIDTH = 190  # image_rows' label column
LABEL_CHARS = 24  # labels wrap at this many characters (9 pt at IMAGE_DPI fits LABEL_WIDTH)


def image_zoom(height: int, width: int) -> int:
    """Screen pixels per image pixel: the least whole number showing the image at least
    MIN_IMAGE_PIXELS on its longer side (1 for images already that large)."""
    return max(1, -(-MIN_IMAGE_PIXELS // max(height, width)))


def _checked_images(images) -> np.ndarray:
    """``images`` as float64 (N, H, W, 1 or 3) clipped to [0, 1], or a ValueError."""
    images = np.clip(np.asarray(images, np.float64), 0.0, 1.0)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"images must be (N >= 1, H, W, 1 or 3), got shape {images.shape}.")
    return images


class _PixelFigure:
    """A figure of ``width`` x ``height`` screen pixels (at IMAGE_DPI) whose contents are
    placed in pixels from its top left corner; a title, if any, centred in a band on top."""

    def __init__(self, content_width: int, content_height: int, title: str | None):
        title_width = len(title) * TITLE_CHAR_WIDTH if title else 0
        self.width = max(content_width, title_width) + 2 * MARGIN
        self.height = content_height + 2 * MARGIN + (TITLE_HEIGHT if title else 0)
        self.left = (self.width - content_width) // 2  # the content centred under the title
        self.top = MARGIN + (TITLE_HEIGHT if title else 0)
        self.fig = plt.figure(figsize=(self.width / IMAGE_DPI, self.height / IMAGE_DPI))
        if title:
            self.text(self.width / 2, MARGIN + TITLE_HEIGHT / 2, title, ha="center", fontsize=11)

    def text(self, x: float, y: float, text: str, **kwargs) -> None:
        """``text`` at (x, y) pixels from the top left, vertically centred there."""
        self.fig.text(x / self.width, 1 - y / self.height, text, va="center", **kwargs)

    def image(self, x: int, y: int, image: np.ndarray, zoom: int) -> None:
        """``image`` (H, W, 1 or 3) with its top left corner at (x, y) pixels, each image pixel
        a ``zoom`` x ``zoom`` square: one channel in grey (0 black, 1 white), three as RGB."""
        h, w, c = image.shape
        box = (x / self.width, 1 - (y + zoom * h) / self.height)
        ax = self.fig.add_axes((*box, zoom * w / self.width, zoom * h / self.height))
        ax.set_axis_off()
        if c == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_aspect("auto")

    def save(self, path: Path) -> None:
        """Writes the PNG (exactly width x height pixels) and closes the figure."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(path, dpi=IMAGE_DPI)
        plt.close(self.fig)


def image_grid(path: Path, images: np.ndarray, title: str | None = None) -> None:
    """App. Fig. 1 style: a square-ish grid of images (N, H, W, C) with values in [0, 1],
    at most MAX_COLUMNS wide, every image at least MIN_IMAGE_PIXELS on screen.

    Values are clipped to [0, 1]; one channel is shown in grey, three as RGB.
    """
    images = _checked_images(images)
    n, h, w, _ = images.shape
    cols = min(int(np.ceil(np.sqrt(n))), MAX_COLUMNS)
    rows = -(-n // cols)
    zoom = image_zoom(h, w)
    step_x, step_y = zoom * w + GAP, zoom * h + GAP
    fig = _PixelFigure(cols * step_x - GAP, rows * step_y - GAP, title)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        fig.image(fig.left + c * step_x, fig.top + r * step_y, image, zoom)
    fig.save(path)


def image_rows(path: Path, rows: list[tuple[str, np.ndarray]], title: str | None = None) -> None:
    """Figs. 3 and 5 style: labelled rows of images (each (N, H, W, C), values in [0, 1]).

    Row i shows its first MAX_COLUMNS images left to right, its label (wrapped) to their
    left; every image is at least MIN_IMAGE_PIXELS on screen. Values are clipped to [0, 1];
    one channel is shown in grey, three as RGB.
    """
    if not rows:
        raise ValueError("image_rows needs at least one row.")
    rows = [(label, _checked_images(images)[:MAX_COLUMNS]) for label, images in rows]
    cols = max(len(images) for _, images in rows)
    h = max(images.shape[1] for _, images in rows)
    w = max(images.shape[2] for _, images in rows)
    zoom = image_zoom(h, w)
    step_x, step_y = zoom * w + GAP, zoom * h + ROW_GAP
    fig = _PixelFigure(LABEL_WIDTH + cols * step_x - GAP, len(rows) * step_y - ROW_GAP, title)
    for r, (label, images) in enumerate(rows):
        y = fig.top + r * step_y
        label = textwrap.fill(label, LABEL_CHARS)
        fig.text(fig.left, y + zoom * h / 2, label, ha="left", fontsize=9, linespacing=1.1)
        for c, image in enumerate(images):
            fig.image(fig.left + LABEL_WIDTH + c * step_x, y, image, zoom)
    fig.save(path)


def learning_curve(
    path: Path,
    steps: np.ndarray,
    values: np.ndarray,
    levels: dict[str, float],
    *,
    ylabel: str,
    title: str | None = None,
    window: int = 20,
) -> None:
    """A training curve: ``values`` logged at ``steps`` (faint) and their running mean over
    ``window`` log points, with each of ``levels`` ({label: value}, e.g. a held-out bound
    and baselines in the same unit) as a labelled horizontal line."""
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if steps.shape != values.shape or steps.ndim != 1 or len(steps) == 0:
        raise ValueError(
            f"steps and values must be equal 1-D arrays, got {steps.shape} and {values.shape}."
        )
    window = max(1, min(window, len(values)))
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(steps, values, color="0.75", lw=0.8, label="logged (one batch each)")
    ax.plot(steps[window - 1 :], smooth, color="C0", lw=1.8, label=f"running mean of {window}")
    for i, (label, value) in enumerate(levels.items()):
        ax.axhline(value, color=f"C{i + 1}", ls="--", lw=1.2, label=f"{label}: {value:.3f}")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    _save(fig, path)


def rate_distortion_figure(
    path: Path, rate: np.ndarray, rmse: np.ndarray, *, rate_unit: str, title: str | None = None
) -> None:
    """DDPM Fig. 5: distortion and rate against reverse-process steps (T - t), and
    distortion against rate. ``rate`` and ``rmse`` are indexed by t - 1, t = 1..T."""
    rate, rmse = np.asarray(rate, np.float64), np.asarray(rmse, np.float64)
    if rate.shape != rmse.shape or rate.ndim != 1 or len(rate) < 2:
        raise ValueError(f"rate and rmse must be equal 1-D arrays, got {rate.shape}, {rmse.shape}.")
    steps = len(rate) - np.arange(1, len(rate) + 1)  # reverse steps taken to reach x^(t)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(steps, rmse, color="C0")
    axes[0].set(xlabel="reverse process steps (T - t)", ylabel="distortion (RMSE, 0..255 scale)")
    axes[1].plot(steps, rate, color="C1")
    axes[1].set(xlabel="reverse process steps (T - t)", ylabel=f"rate ({rate_unit})")
    axes[2].plot(rate, rmse, color="C2")
    axes[2].set(xlabel=f"rate ({rate_unit})", ylabel="distortion (RMSE, 0..255 scale)")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, path)


@dataclasses.dataclass(frozen=True)
class LadderCurve:
    """One model's ladder: K_M (mean, standard error) at each M, its K, its ODE value or None;
    ``gap``/``gap_stderr``: truth - K_M paired over the same examples, where the truth is known."""

    label: str
    m: list[int]
    mean: list[float]
    stderr: list[float]
    k: float
    ode: float | None = None
    gap: list[float] | None = None
    gap_stderr: list[float] | None = None


def _two_se_errorbar(ax, x, y, stderr, colour: str, label: str) -> None:
    ax.errorbar(x, y, yerr=2 * np.asarray(stderr), marker="o", capsize=3, color=colour, label=label)


def ladder_figure(
    path: Path,
    curves: list[LadderCurve],
    truth: float | None,
    *,
    units: str,
    title: str | None = None,
) -> None:
    """K_M against M (log axis) with error bars per model, each model's K (dotted) and ODE
    value (dashed) in its colour, and ``truth`` (the curves' common true log-likelihood, or
    None) as a black line; where every curve has its gap to its own truth, a second panel
    shows the paired gap truth - K_M (2 standard errors)."""
    paired = all(c.gap is not None for c in curves)
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(11 if paired else 6.4, 4.4))
    ax = axes[0] if paired else axes
    for i, c in enumerate(curves):
        colour = f"C{i}"
        _two_se_errorbar(ax, c.m, c.mean, c.stderr, colour, f"{c.label}: K_M (± 2 SE)")
        ax.axhline(c.k, color=colour, linestyle=":", label=f"{c.label}: K")
        if c.ode is not None:
            ax.axhline(c.ode, color=colour, linestyle="--", label=f"{c.label}: ODE log p")
    if truth is not None:
        ax.axhline(truth, color="black", linewidth=1.5, label="true log-likelihood")
    ax.set_xscale("log")
    ax.set_xlabel("M, trajectories per example")
    ax.set_ylabel("\n".join(textwrap.wrap(units, 40)))
    ax.legend(fontsize=7, loc="lower right")
    if paired:
        right = axes[1]
        for i, c in enumerate(curves):
            _two_se_errorbar(right, c.m, c.gap, c.gap_stderr, f"C{i}", c.label)
        right.axhline(0.0, color="black", linewidth=1.5, label="truth")
        right.set_xscale("log")
        right.set_xlabel("M, trajectories per example")
        right.set_ylabel("truth − K_M, paired over the same examples")
        right.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    _save(fig, path)
