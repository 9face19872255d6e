"""dpm_jax: diffusion probabilistic models (Sohl-Dickstein et al. 2015) in JAX.

Math (pure jax.numpy): ``schedules``, ``gaussian``, ``binomial``, ``likelihood``.
Models (Flax Linen): ``models``. Data: ``data``. Training loop: ``training``.
"""

__version__ = "0.1.0"
