"""dpm_jax.models.group_norm: equal to flax's GroupNorm (and swish) in outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax.models.group_norm import GroupNorm


def _flax(x, params, groups, swish):
    y = nn.GroupNorm(groups, epsilon=1e-6).apply({"params": params}, x)
    return nn.swish(y) if swish else y


@pytest.mark.parametrize("swish", [False, True])
@pytest.mark.parametrize(("shape", "groups"), [((3, 8, 8, 64), 32), ((2, 5, 4, 96), 8)])
def test_equals_flax_group_norm_in_outputs_and_gradients(shape, groups, swish):
    """Outputs and the gradients of a random linear functional with respect to the input,
    scale and bias agree with autodiff of flax.linen.GroupNorm (random affine parameters,
    inputs with a nonzero mean per channel)."""
    kx, ks, kb, kg, km = jax.random.split(jax.random.key(0), 5)
    c = shape[-1]
    x = 2.0 * jax.random.normal(kx, shape) + jax.random.normal(km, (c,))
    params = {"scale": 1 + 0.5 * jax.random.normal(ks, (c,)), "bias": jax.random.normal(kb, (c,))}
    g = jax.random.normal(kg, shape)
    ours = GroupNorm(groups, swish=swish)
    assert jax.tree.map(jnp.shape, ours.init(kx, x)["params"]) == jax.tree.map(jnp.shape, params)

    def loss(fn):
        return lambda x, p: jnp.sum(g * fn(x, p))

    def apply_ours(x, p):
        return ours.apply({"params": p}, x)

    def apply_flax(x, p):
        return _flax(x, p, groups, swish)

    np.testing.assert_allclose(apply_ours(x, params), apply_flax(x, params), atol=2e-5, rtol=1e-5)
    got = jax.grad(loss(apply_ours), argnums=(0, 1))(x, params)
    want = jax.grad(loss(apply_flax), argnums=(0, 1))(x, params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_channels_not_divisible_by_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="must divide the 48 channels"):
        GroupNorm(32).init(jax.random.key(0), jnp.zeros((1, 4, 4, 48)))
