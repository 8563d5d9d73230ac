"""Objectives: pure functions of one image's layer activation (h, w, c) -> scalar, ascended by the dream loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def nightmare_objective(activation: Array, thresh: Array | float) -> Array:
    """Darknet's ``calculate_loss``: 0.5 * sum of squares of the activations above mean + thresh * std.

    Its gradient is the activation where selected, else 0: exactly Darknet's seed delta (golden README Q9).
    """
    mean = jnp.mean(activation)
    std = jnp.sqrt(jnp.mean(jnp.square(activation - mean)))
    selected = jax.lax.stop_gradient(activation > mean + thresh * std)
    return 0.5 * jnp.sum(jnp.where(selected, activation, 0.0) ** 2)


def reconstruction_objective(activation: Array, features: Array) -> Array:
    """Feature reconstruction: -0.5 * ||features - activation||^2 (ascent pulls the activation to the target)."""
    return -0.5 * jnp.sum(jnp.square(features - activation))
