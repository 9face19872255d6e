"""DDPM on dead leaves: the U-Net and L_simple on the 2015 dead-leaves images, bits/dim exact.

  python -m experiments.ddpm_dead_leaves --workdir runs/ddpm_dead_leaves [--preset small]

``experiments.ddpm`` with the generated grey occlusion images of ``experiments.dead_leaves``
(the same generator, sizes and seeds, so the same training and test images) in place of a
named dataset, and a small U-Net for 16 x 16 images. Reported like every DDPM run: the
exact bound in bits/dim of the 8-bit data, and the same in the 2015 unit (bits per pixel of
the unit-variance dequantised data) for comparison with ``experiments.dead_leaves``.
"""

from __future__ import annotations

import dataclasses

from experiments import config as cfg
from experiments import ddpm, ddpm_config, dead_leaves

DESCRIPTION = __doc__.splitlines()[0]


@dataclasses.dataclass(frozen=True)
class DataConfig(dead_leaves.DataConfig):
    """``data``: the dead-leaves generator (``experiments.dead_leaves``) and DDPM's flips."""

    HELP = {"random_flip": ddpm_config.DDPMDataConfig.HELP["random_flip"]}

    random_flip: bool = True  # occlusion images are statistically symmetric left-right


@dataclasses.dataclass(frozen=True)
class Config(ddpm_config.DDPMConfig):
    """A DDPM dead-leaves run: 16 x 16 generated images, a 2-level U-Net, T = 1000."""

    data: DataConfig = DataConfig()
    model: ddpm_config.DDPMModelConfig = ddpm_config.DDPMModelConfig(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,)
    )
    train: cfg.TrainConfig = dataclasses.replace(
        ddpm_config.PRESETS["mnist_5k"].train, steps=30_000, checkpoint_every=2_000
    )


PRESETS = {
    "default": Config(),
    "small": cfg.replace(
        Config(),
        {**dead_leaves.SMALL_DATA, **ddpm_config.SMALL_RUN},
    ),
}


class DDPMDeadLeavesExperiment(ddpm.DDPMExperiment):
    """DDPM on dead leaves (``python -m experiments.ddpm_dead_leaves``)."""

    name = "ddpm_dead_leaves"
    description = DESCRIPTION
    config_class = Config
    presets = PRESETS
    mutable_keys = tuple(k for k in ddpm_config.MUTABLE_KEYS if not k.startswith("data."))

    def load_split(self, config: Config, split: str):
        return dead_leaves.experiment.load_split(config, split)


experiment = DDPMDeadLeavesExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
