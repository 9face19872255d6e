"""One module per paper experiment: python -m experiments.<name>.

Each module defines ``experiment``, an ``experiments.common.Experiment``, and ``main``;
:func:`all_experiments` lists them by name.
"""

from __future__ import annotations


def all_experiments() -> dict:
    """{name: experiment object} of every experiment (imports their modules)."""
    from experiments import (
        adm,
        bark,
        binary_heartbeat,
        cifar10,
        ddpm,
        ddpm_dead_leaves,
        ddpm_swiss_roll,
        dead_leaves,
        mnist,
        swiss_roll,
    )

    modules = (
        *(swiss_roll, binary_heartbeat, mnist, cifar10, dead_leaves, bark),
        *(ddpm, ddpm_swiss_roll, ddpm_dead_leaves, adm),
    )
    return {m.experiment.name: m.experiment for m in modules}
