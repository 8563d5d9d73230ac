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


def l2_objective(activation: Array, aux: Array | None = None) -> Array:
    """Google DeepDream: 0.5 * sum of squares of the whole layer."""
    del aux
    return 0.5 * jnp.sum(jnp.square(activation))


def channel_objective(activation: Array, channel: Array) -> Array:
    """Mean activation of one channel over all positions."""
    return jnp.mean(jnp.take(activation, channel, axis=-1))


def neuron_objective(activation: Array, channel: Array) -> Array:
    """One unit: the given channel at the centre position of the layer."""
    h, w = activation.shape[0], activation.shape[1]
    return jnp.take(activation[h // 2, w // 2], channel)


def guide_objective(activation: Array, guide: Array) -> Array:
    """Guided dream: each position's feature vector is pulled toward its best-matching guide feature
    (the largest dot product), as in Google's guided DeepDream. ``guide`` is (positions, channels)."""
    features = activation.reshape(-1, activation.shape[-1])
    scores = features @ jax.lax.stop_gradient(guide).T
    best = jax.lax.stop_gradient(jnp.argmax(scores, axis=1))
    return jnp.sum(jnp.take_along_axis(scores, best[:, None], axis=1))


LAYER_OBJECTIVES = {
    "darknet": nightmare_objective, "l2": l2_objective, "channel": channel_objective, "neuron": neuron_objective,
    "guide": guide_objective,
}


def _bce(logits: Array, target: Array) -> Array:
    return jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def class_objective(logits: Array, target: Array) -> Array:
    """-BCE-with-logits(logits, target), summed over classes: the published single-target lucid recipe."""
    return -jnp.sum(_bce(logits, target))


def class_mix_objective(logits: Array, target: Array) -> Array:
    """For several classes: the log-likelihood of the target's shares under the softmax, sum_k share_k *
    log softmax(logits)_k. Its gradient, share - softmax, pulls a class back once it holds more than its share,
    so the class the network reaches most easily cannot take everything (plain BCE ends at ~100 % of it).

    The objective alone does not settle (one normalised step can swing a classifier from one class to the other),
    so mixed dreams also anneal the step and draw the end of the round without jitter (lucid_mode.MIX_SETTLE);
    the measurements behind that are in benchmarks/NOTES.md.
    """
    shares = target / jnp.sum(target)
    return jnp.sum(shares * jax.nn.log_softmax(logits))


LOGIT_OBJECTIVES = {"class": class_objective, "class_mix": class_mix_objective}
