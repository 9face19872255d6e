"""The bound of an inpainting sampler: K on log p(x_hidden | x_known), per method.

:func:`dpm_jax.conditioning.inpaint` defines, for each method, a generative model of the
hidden elements given the known ones (a Markov chain over the hidden part of x^(t)). Its
variational bound with the forward process on the hidden elements as the inference
distribution has the terms of Eq. 14 summed over the hidden elements only:

* ``method="clamp"``: the model at step t sees x^(t) with its known elements set to x_known,

    log p(x_h | x_k) >= -L_T,h - sum_{t=2..T} E_q KL(q(x_h^(t-1) | x_h^(t), x_h) ||
                        p_h(x_h^(t-1) | [x_h^(t), x_k])) - L_0,h.

* ``method="renoise"``: the known elements of the model's input are fresh draws
  x_k^(t) ~ q(x^(t) | x_k) at every step, auxiliary variables of the chain; with the same
  draws in the inference distribution they cancel, leaving the terms above with the model
  fed x^(t) ~ q(x^(t) | x0) on every element, i.e. Eq. 14's KL terms restricted to the
  hidden elements.

In both, L_T,h and L_0,h are the closed forms of :func:`dpm_jax.gaussian.prior_term` and
:func:`dpm_jax.gaussian.continuous_decoder_term` (Eq. 44's fixed first step, which
:func:`~dpm_jax.conditioning.inpaint` also uses) over the hidden elements. Each is a lower
bound on the log density of the hidden elements under that sampler, so two methods are
compared on the same footing: the larger, the better the sampler explains the truth.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from dpm_jax import gaussian, terms
from dpm_jax.conditioning import INPAINT_METHODS
from dpm_jax.shapes import event_sum, t_array
from dpm_jax.validation import check_known, check_reverse_fn_steps


def _per_element(term_fn, schedule, x0: jax.Array) -> jax.Array:
    """A closed-form term of Eq. 14 that sums over elements, per element: x0's shape."""
    return term_fn(schedule, x0.reshape(-1, 1)).reshape(x0.shape)


def hidden_kl_term(
    schedule,
    reverse_fn: gaussian.ReverseFn,
    x0: jax.Array,
    known_mask: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    method: str,
) -> jax.Array:
    """The t-th KL term of the conditional bound at one x^(t), nats per example (N,)."""
    t = t_array(t, x0.shape[0])
    x_t = gaussian.q_sample(schedule, x0, t, noise)
    target = gaussian.q_posterior(schedule, x0, x_t, t)
    model_in = jnp.where(known_mask, x0, x_t) if method == "clamp" else x_t
    model = reverse_fn(model_in, t)
    chex.assert_equal_shape([model.mean, model.var, x0])
    return event_sum(jnp.where(known_mask, 0.0, gaussian.gaussian_kl(target, model)))


def inpainting_bound(
    schedule,
    reverse_fn: gaussian.ReverseFn,
    key: chex.PRNGKey,
    x0: jax.Array,
    known_mask: jax.Array,
    *,
    method: str = "clamp",
) -> terms.BoundTerms:
    """L_T, sum_{t=2..T} L_{t-1} and L_0 of the hidden elements given the known ones, nats.

    Args:
      x0: (N, *event) the true data, known and hidden elements (model units).
      known_mask: boolean, x0's shape; True = known (conditioned on), False = hidden (scored).
      method: the sampler of :func:`dpm_jax.conditioning.inpaint` whose conditional density
        is bounded ("clamp" or "renoise").

    Returns:
      :class:`dpm_jax.terms.BoundTerms` per example, nats; their negated sum is a lower bound
      on log p_method(x_hidden | x_known), unbiased over the forward samples x^(t) (one per t
      and example, drawn from ``key`` as :func:`dpm_jax.gaussian.bound_terms` draws them, so
      with no known element both give the same terms).
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"method must be one of {INPAINT_METHODS}, got {method!r}.")
    check_known(x0, known_mask)
    check_reverse_fn_steps(schedule, reverse_fn)
    hidden = ~known_mask

    def kl_fn(t, k):
        noise = jax.random.normal(k, x0.shape, x0.dtype)
        return hidden_kl_term(schedule, reverse_fn, x0, known_mask, t, noise, method)

    kl = terms.sum_over_steps(kl_fn, schedule.num_steps, key, x0.shape[0], x0.dtype)
    prior = _per_element(gaussian.prior_term, schedule, x0)
    decoder = _per_element(gaussian.continuous_decoder_term, schedule, x0)
    return terms.BoundTerms(
        prior=event_sum(jnp.where(hidden, prior, 0.0)),
        kl=kl,
        decoder=event_sum(jnp.where(hidden, decoder, 0.0)),
    )
