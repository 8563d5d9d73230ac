"""Objectives: pure functions of one image's layer activation (h, w, c) -> scalar, ascended by the dream loop;
and the objective algebra of feature visualisation (``channel``, ``neuron``, ``layer``, ``direction``,
``class_logit``, ``class_bce``, ``diversity``, combined with +, - and *; ``jaxdream.render`` ascends them).

A layer objective takes (activation, aux, region): ``region`` is None, or on a canvas (images of several sizes
sharing one program) an (h, w, 1) bool mask of the positions that belong to the image; the activation is zero
beyond it, and every mean and selection counts the region only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.errors import OptionError

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


# Objective algebra for feature visualisation (``jaxdream.render``): terms on layers or logits, combined with +, -
# and scalar *, each optionally for one batch item. What decides the compiled program (kinds, layers, vector
# lengths: ``structure``) is kept apart from the numbers (weights, channels, classes, positions, vectors:
# ``numbers``), which are arguments: another channel or weight compiles nothing.
TERM_KINDS = ("channel", "neuron", "layer", "direction", "direction_cos", "class_logit", "class_bce", "diversity",
              "feature_l2")
LOGIT_KINDS = ("class_logit", "class_bce")


@dataclass(frozen=True)
class Term:
    """One weighted term. ``layer``: an index or a layer name (resolved against the model when rendering);
    ``index``: the channel or class (an int, or a class name); ``vector``: a direction's (channels,) or the BCE
    target's {class: weight}; ``at``: a neuron's (x, y), None for the centre; ``batch``: the one item it is for."""

    kind: str
    layer: int | str | None = None
    weight: float = 1.0
    index: int | str = 0
    vector: Any = None
    at: tuple[int, int] | None = None
    batch: int | None = None


@dataclass(frozen=True)
class Objective:
    """A sum of weighted terms, ascended by ``jaxdream.render``: ``channel(9, 3) - 0.5 * neuron(9, 4)``."""

    terms: tuple[Term, ...]

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-1.0) * other

    def __mul__(self, factor: float) -> Objective:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            return NotImplemented
        return Objective(tuple(replace(t, weight=t.weight * float(factor)) for t in self.terms))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return (-1.0) * self

    def for_item(self, batch: int) -> Objective:
        """The same terms, for batch item ``batch`` only."""
        return Objective(tuple(replace(t, batch=batch) for t in self.terms))


def channel(layer: int | str, c: int, batch: int | None = None) -> Objective:
    """The mean of channel ``c`` of ``layer`` over all positions (``batch``: for that batch item only)."""
    return _for(Objective((Term("channel", layer, index=c),)), batch)


def neuron(layer: int | str, c: int, x: int | None = None, y: int | None = None, batch: int | None = None
           ) -> Objective:
    """Channel ``c`` of ``layer`` at one position (x, y), the centre by default."""
    if (x is None) != (y is None):
        raise OptionError("a neuron's position needs both x and y (or neither, for the centre)")
    return _for(Objective((Term("neuron", layer, index=c, at=None if x is None else (int(x), int(y))),)), batch)


def layer(layer: int | str, batch: int | None = None) -> Objective:
    """DeepDream's objective: the mean square of the whole layer."""
    return _for(Objective((Term("layer", layer),)), batch)


def direction(layer: int | str, vector: Any, cosine: bool = False, batch: int | None = None) -> Objective:
    """The activation's agreement with a direction in channel space, averaged over positions: the dot product, or
    with ``cosine`` the cosine similarity (insensitive to the activation's size)."""
    vector = np.asarray(vector, np.float32)
    if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all():
        raise OptionError("a direction is a finite vector with one value per channel")
    return _for(Objective((Term("direction_cos" if cosine else "direction", layer, vector=vector),)), batch)


def class_logit(c: int | str, batch: int | None = None) -> Objective:
    """The logit of class ``c`` (an index or a name)."""
    return _for(Objective((Term("class_logit", index=c),)), batch)


def class_bce(classes: Any, batch: int | None = None) -> Objective:
    """The published recipe: -BCE-with-logits toward a scaled one-hot target (``classes``: a name, an index, or
    {class: weight} for a mix)."""
    return _for(Objective((Term("class_bce", vector=classes),)), batch)


def feature_distance(layer: int | str, features: Any) -> Objective:
    """Minus the mean square distance of ``layer``'s activation from ``features`` (h, w, c): keeps a render close
    to a photo in that layer's feature space (feature accentuation's regulariser)."""
    features = np.asarray(features, np.float32)
    if features.ndim != 3 or not np.isfinite(features).all():
        raise OptionError("features for a distance are one finite activation (height, width, channels)")
    return Objective((Term("feature_l2", layer, vector=features),))


def diversity(layer: int | str) -> Objective:
    """Minus the mean cosine similarity between the batch items' Gram matrices of ``layer``: pushes the items of a
    batch apart (it needs a batch of two or more)."""
    return Objective((Term("diversity", layer),))


def _for(objective: Objective, batch: int | None) -> Objective:
    """``objective``, for batch item ``batch`` only when one is given."""
    return objective if batch is None else objective.for_item(batch)


def term_value(kind: str, activation: Array, number: dict[str, Array]) -> Array:
    """One item's value of a layer term on its activation (h, w, c)."""
    if kind == "channel":
        return jnp.mean(jnp.take(activation, number["index"], axis=-1))
    if kind == "neuron":
        h, w = activation.shape[0], activation.shape[1]
        x = jnp.clip(number["x"], 0, w - 1) if "x" in number else w // 2
        y = jnp.clip(number["y"], 0, h - 1) if "y" in number else h // 2
        return jnp.take(activation[y, x], number["index"])
    if kind == "layer":
        return jnp.mean(jnp.square(activation))
    if kind == "feature_l2":
        return -jnp.mean(jnp.square(activation - number["vector"]))
    products = activation @ number["vector"]
    if kind == "direction":
        return jnp.mean(products)
    norms = jnp.linalg.norm(activation, axis=-1) * jnp.linalg.norm(number["vector"])
    return jnp.mean(products / (norms + 1e-6))


def diversity_value(activations: Array) -> Array:
    """Minus the sum, over ordered pairs of distinct items, of the cosine similarity of their Gram matrices,
    divided by the batch size (lucid's normalisation: the term grows with the batch)."""
    n = activations.shape[0]
    flat = activations.reshape(n, -1, activations.shape[-1])
    grams = jnp.einsum("npc,npd->ncd", flat, flat).reshape(n, -1)
    unit = grams / (jnp.linalg.norm(grams, axis=-1, keepdims=True) + 1e-12)
    similarity = unit @ unit.T
    return -(jnp.sum(similarity) - jnp.trace(similarity)) / n


_ATOM = re.compile(r"^(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*\*\s*)?(?P<atom>\S.*)$")
_FORMS = "class:NAME, bce:NAME, layer:L, neuron:L:C[:X:Y], channel:L:C, diversity:L or L:C"


def parse_objective(text: str) -> Objective:
    """The command line's objectives: terms joined by ' + ' and ' - ' (spaces around the sign), each
    ``[weight*]atom``, the atoms ``class:NAME`` (logit), ``bce:NAME`` (the published recipe), ``layer:L``,
    ``neuron:L:C[:X:Y]``, ``channel:L:C``, ``diversity:L``, or ``L:C`` (a channel; L an index or a layer
    name). Anything else is one error naming the piece."""
    source = text.strip()
    if not source:
        raise OptionError("an empty objective; e.g. class:ostrich, layer:9, neuron:9:12 or fire5/concat_1:12")
    if source[-1] in "+-*":
        raise OptionError(f"objective {source!r} ends in {source[-1]!r}: a term is missing")
    pieces = re.split(r"\s+([+-])\s+", source)
    signs, atoms = ["+", *pieces[1::2]], pieces[0::2]
    if re.match(r"-(\s|[^\d\s])", atoms[0]):  # a leading sign: '-layer:9', '- layer:9'
        signs[0], atoms[0] = "-", atoms[0][1:].strip()
    total: Objective | None = None
    for sign, atom in zip(signs, atoms, strict=True):
        term = _parse_atom(atom, source) * (-1.0 if sign == "-" else 1.0)
        total = term if total is None else total + term
    assert total is not None
    return total


def _parse_atom(atom: str, source: str) -> Objective:
    match = _ATOM.match(atom.strip())
    body = match["atom"].strip() if match else ""
    if match is None or body[:1] in "+-*" or "*" in body or "+" in body:
        raise OptionError(f"objective {source!r}: {atom!r} is not a term (write {_FORMS}, with an optional "
                          "weight like 0.5*, joined by ' + ' or ' - ' with spaces around the sign)")
    weight = float(match["weight"]) if match["weight"] else 1.0
    if not math.isfinite(weight):
        raise OptionError(f"objective {source!r}: the weight in {atom!r} is not a finite number")
    kind, _, rest = body.partition(":")
    rest = rest.strip()

    def number(text: str, what: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise OptionError(f"objective {source!r}: {what} {text!r} in {atom!r} is not a whole number") from None

    if kind in ("class", "bce", "layer", "diversity", "neuron", "channel") and not rest:
        raise OptionError(f"objective {source!r}: {kind}: needs {'a class' if kind in ('class', 'bce') else 'a layer'}"
                          f" after the colon ({_FORMS})")
    if kind in ("class", "bce"):
        index: int | str = int(rest) if rest.isdigit() else rest
        if kind == "class" and ("," in rest or re.search(r":\s*[\d.eE+-]+$", rest)):
            raise OptionError(f"objective {source!r}: class: takes one class; a weighted mix is "
                              f"bce:{rest} or a sum of class: terms")
        return weight * (class_logit(index) if kind == "class" else class_bce(index))
    if kind in ("layer", "diversity"):
        target = _layer_token(rest)
        return weight * (layer(target) if kind == "layer" else diversity(target))
    if kind == "neuron":  # numbers from the right: a layer name may hold ':'
        parts = rest.rsplit(":", 3)
        if len(parts) == 4 and all(re.fullmatch(r"-?\d+", p.strip()) for p in parts[1:]):
            name, c, x, y = parts
            return weight * neuron(_layer_token(name), number(c, "channel"), number(x, "x"), number(y, "y"))
        name, sep, c = rest.rpartition(":")
        if not sep or not name:
            raise OptionError(f"objective {source!r}: write a neuron as neuron:LAYER:CHANNEL[:X:Y], got {atom!r}")
        return weight * neuron(_layer_token(name), number(c, "channel"))
    if kind == "channel":
        body = rest
    target, sep, c = body.rpartition(":")
    if not sep or not target:
        raise OptionError(f"objective {source!r}: {atom!r} is not a term; use {_FORMS}")
    return weight * channel(_layer_token(target), number(c, "channel"))


def _layer_token(text: str) -> int | str:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text
