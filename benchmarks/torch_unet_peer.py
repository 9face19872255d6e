"""PyTorch peer of the DDPM CIFAR-10 train step: diffusers' UNet2DModel, CPU yardstick.

The same network as ``experiments.ddpm`` (Ho et al. 2020, CIFAR-10: ch 128, ch_mult
(1, 2, 2, 2), 2 residual blocks, attention at 16x16, dropout 0.1, GroupNorm 32) built by the
``diffusers`` library, trained by the same step: L_simple (epsilon MSE, t uniform in 1..T,
linear betas 1e-4..0.02, T = 1000), Adam 2e-4, global-norm clipping at 1, EMA 0.9999.
It only times "what a user would pick instead"; it is not part of the library.

  python benchmarks/torch_unet_peer.py --batch 32 --steps 3

Needs the ``bench`` extra (``pip install -e .[bench]``: torch 2.13.0 CPU, diffusers).
Prints one final line ``RESULT {json}``: parameters, images/s of the train step and of the
forward pass (median over timed steps), seconds of the first step, peak RSS in MiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

DDPM_CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    dropout=0.1,
    norm_num_groups=32,
    norm_eps=1e-6,
    act_fn="silu",
    attention_head_dim=None,
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
)


def make_train_step(batch: int, seed: int = 0):
    """``(model, x0, train_step)``: the peer's network, a fixed batch in [-1, 1] and one
    train step on it (``train_step() -> loss``)."""
    torch.manual_seed(seed)
    model = UNet2DModel(**DDPM_CIFAR10).train()
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).float()
    x0 = torch.rand(batch, 3, 32, 32) * 2 - 1

    def train_step() -> float:
        t = torch.randint(0, T, (batch,))
        eps = torch.randn_like(x0)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(model(x_t, t + 1).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 1 - 0.9999)
        return float(loss.detach())

    return model, x0, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed train steps")
    parser.add_argument("--fwd_steps", type=int, default=3, help="timed forward passes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, x0, train_step = make_train_step(args.batch, args.seed)

    @torch.inference_mode()
    def forward() -> float:
        t = torch.randint(1, 1001, (args.batch,))
        return float(model.eval()(x0, t).sample[0, 0, 0, 0])

    def timed(fn, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times

    start = time.perf_counter()
    train_step()  # forward() below switches the model to eval mode: it runs last
    first = time.perf_counter() - start
    train = statistics.median(timed(train_step, args.steps))
    forward()
    fwd = statistics.median(timed(forward, args.fwd_steps))
    result = {
        "params": sum(p.numel() for p in model.parameters()),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "first_step_s": first,
        "train_img_per_s": args.batch / train,
        "fwd_img_per_s": args.batch / fwd,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
