"""Objectives: pure functions of one image's layer activation (h, w, c) -> scalar, ascended by the dream loop.

A layer objective takes (activation, aux, region): ``region`` is None, or on a canvas (images of several sizes
sharing one program) an (h, w, 1) bool mask of the positions that belong to the image; the activation is zero
beyond it, and every mean and selection counts the region only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def region_mean(x: Array, region: Array | None) -> Array:
    """The mean of ``x`` (h, w, c), over the positions of ``region`` (h, w, 1) where one is given."""
    if region is None:
        return jnp.mean(x)
    count = (jnp.sum(region, dtype=jnp.int32) * x.shape[-1]).astype(x.dtype)  # exact: counts fit an int32
    return jnp.sum(jnp.where(region, x, 0.0)) / count


def nightmare_objective(activation: Array, thresh: Array | float, region: Array | None = None) -> Array:
    """Darknet's ``calculate_loss``: 0.5 * sum of squares of the activations above mean + thresh * std.

    Its gradient is the activation where selected, else 0: exactly Darknet's seed delta (golden README Q9).
    """
    mean = region_mean(activation, region)
    std = jnp.sqrt(region_mean(jnp.square(activation - mean), region))
    selected = activation > mean + thresh * std
    selected = jax.lax.stop_gradient(selected if region is None else selected & region)
    return 0.5 * jnp.sum(jnp.where(selected, activation, 0.0) ** 2)


def reconstruction_objective(activation: Array, features: Array) -> Array:
    """Feature reconstruction: -0.5 * ||features - activation||^2 (ascent pulls the activation to the target)."""
    return -0.5 * jnp.sum(jnp.square(features - activation))


def l2_objective(activation: Array, aux: Array | None = None, region: Array | None = None) -> Array:
    """Google DeepDream: 0.5 * sum of squares of the whole layer (zero beyond a region already)."""
    del aux, region
    return 0.5 * jnp.sum(jnp.square(activation))


def channel_objective(activation: Array, channel: Array, region: Array | None = None) -> Array:
    """Mean activation of one channel over all positions."""
    return region_mean(jnp.take(activation, channel, axis=-1)[..., None], region)


def neuron_objective(activation: Array, channel: Array, region: Array | None = None) -> Array:
    """One unit: the given channel at the centre position of the layer (of the region)."""
    if region is None:
        h, w = activation.shape[0], activation.shape[1]
    else:
        h, w = jnp.sum(region[:, 0, 0]), jnp.sum(region[0, :, 0])
    return jnp.take(activation[h // 2, w // 2], channel)


def guide_objective(activation: Array, guide: Array, region: Array | None = None) -> Array:
    """Guided dream: each position's feature vector is pulled toward its best-matching guide feature
    (the largest dot product), as in Google's guided DeepDream. ``guide`` is (positions, channels). Not on a
    canvas: the guide's positions are its own size's (``CANVAS_OBJECTIVES``)."""
    del region
    features = activation.reshape(-1, activation.shape[-1])
    scores = features @ jax.lax.stop_gradient(guide).T
    best = jax.lax.stop_gradient(jnp.argmax(scores, axis=1))
    return jnp.sum(jnp.take_along_axis(scores, best[:, None], axis=1))


LAYER_OBJECTIVES = {
    "darknet": nightmare_objective, "l2": l2_objective, "channel": channel_objective, "neuron": neuron_objective,
    "guide": guide_objective,
}
CANVAS_OBJECTIVES = ("darknet", "l2", "channel", "neuron")  # those that take a region


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
