"""A small digit classifier whose penultimate layer is the feature space of the offline
sample-quality metrics (``dpm_jax.sample_quality``).

Published FIDs use InceptionV3's 2048-d pool features on ImageNet-trained weights, which
cannot be downloaded here; any feature function ``images -> (N, F)`` plugs into
``sample_quality`` instead. This network is trained by the project on the same digits
(``experiments.adm_quality``), so its Fréchet distances compare models with each other on
these digits only, never with published FIDs.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class FeatureClassifier(nn.Module):
    """conv 3x3 (32), ReLU, conv 3x3 (64), ReLU, 2x2 average pool, conv 3x3 (64), ReLU,
    global average pool, dense ``num_features`` + ReLU (the features), dense logits.

    ``apply(params, x)`` with x (N, H, W, C) in [-1, 1] -> (logits (N, num_classes),
    features (N, num_features))."""

    num_classes: int = 10
    num_features: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank(x, 4)
        h = nn.relu(nn.Conv(32, (3, 3), name="conv_0")(x))
        h = nn.relu(nn.Conv(64, (3, 3), name="conv_1")(h))
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(64, (3, 3), name="conv_2")(h))
        h = jnp.mean(h, axis=(1, 2))
        features = nn.relu(nn.Dense(self.num_features, name="features")(h))
        return nn.Dense(self.num_classes, name="logits")(features), features
