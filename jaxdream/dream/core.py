"""The pure dream programs: no I/O, no caches, no host state.

A round's random choices (layer in the range, octave, shift, flip per iteration) form a schedule drawn from a
jax.random key (``draw_schedule``; or given explicitly, to replay Darknet's own draws). Each (layer, view size)
pair of a schedule is one small program, ``branch_step``: one iteration (view, transform, gradient of the
objective, back, Darknet's update) on a batch, which shares the row. The engine dispatches the branches from the
host along the schedule, so each compiles on its own, in parallel, as soon as it is known, and is shared by every
round, range, mode and command that meets the same (layer, view size, image size).

Every function here returns a function of arrays only; ``compiled.cache`` compiles and caches them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdream import image as I
from jaxdream.checks import check_count, check_number
from jaxdream.dream.seams import PARAMETERISATIONS, TRANSFORMS, Parameterisation, Region, Transform
from jaxdream.errors import OptionError
from jaxdream.objectives import LAYER_OBJECTIVES, LOGIT_OBJECTIVES, reconstruction_objective, region_mean
from jaxdream.ops import region_mask, resolve_precision

if TYPE_CHECKING:
    from jaxdream.protocol import Model

Array = jax.Array
GRAY_PULL = 0.1
SHIFT_RANGE = 8  # dx, dy in [-8, 7]
NORMS = ("std", "mean_abs", "none")  # Darknet's normalize_array, Google's mean |g|, or the raw update
OBJECTIVES = (*LAYER_OBJECTIVES, *LOGIT_OBJECTIVES)


@dataclass(frozen=True, kw_only=True)
class DreamConfig:
    """What a round computes: everything that decides the compiled program besides the argument shapes.

    Checked when built, so a bad value fails here with one clear message, never later inside a trace.
    """

    layer: int
    layer_range: int = 1
    iters: int = 10
    octaves: int = 4
    norm: str = "std"  # one of NORMS
    jitter: bool = True
    objective: str = "darknet"  # one of OBJECTIVES
    param: str = "darknet-octaves"  # the image parameterisation (seams.PARAMETERISATIONS)
    transform: str = "darknet-jitter"  # the transform around the network (seams.TRANSFORMS)
    gray_pull: float = GRAY_PULL
    anneal: bool = False  # step size falls linearly to 0 over the round (lets a mixed target settle)
    settle: float = 0.0  # final fraction of the round drawn without jitter: steps on the view that gets classified
    precision: str | None = None  # compute mode of convolutions (ops.COMPUTE_MODES); None: $JAXDREAM_PRECISION or f32

    def __post_init__(self) -> None:
        check_count("layer", self.layer, 0)
        check_count("range", self.layer_range, 1)
        check_count("iters", self.iters, 0)
        check_count("octaves", self.octaves, 1)
        if self.norm not in NORMS:
            raise OptionError(f"norm {self.norm!r}: use one of {', '.join(NORMS)}")
        if self.objective not in OBJECTIVES:
            raise OptionError(f"--objective {self.objective!r}: use one of {', '.join(LAYER_OBJECTIVES)}")
        if self.param not in PARAMETERISATIONS:
            raise OptionError(f"param {self.param!r}: use one of {', '.join(PARAMETERISATIONS)}")
        if self.transform not in TRANSFORMS:
            raise OptionError(f"transform {self.transform!r}: use one of {', '.join(TRANSFORMS)}")
        check_number("gray-pull", self.gray_pull)
        if not 0.0 <= check_number("settle", self.settle) <= 1.0:
            raise OptionError(f"settle {self.settle} must be between 0 and 1")
        object.__setattr__(self, "precision", resolve_precision(self.precision))
        object.__setattr__(self, "jitter", bool(self.jitter))

    @property
    def layers(self) -> tuple[int, ...]:
        """Darknet draws ``layer + rand() % range - range / 2``."""
        first = self.layer - self.layer_range // 2
        return tuple(range(first, first + self.layer_range))

    @property
    def parameterisation(self) -> Parameterisation:
        return self.step.parameterisation

    @property
    def transformation(self) -> Transform:
        return self.step.transformation

    @property
    def octave_count(self) -> int:
        """Octaves the schedule can draw (1 without jitter)."""
        return self.octaves if self.jitter else 1

    @property
    def step(self) -> StepConfig:
        """What each iteration's program computes, apart from its branch."""
        return StepConfig(objective=self.objective, param=self.param, transform=self.transform, norm=self.norm,
                          gray_pull=self.gray_pull, precision=str(self.precision))

    def step_rates(self, rate: float) -> np.ndarray:
        """Each iteration's step size (iters,) float32: ``rate``, or with ``anneal`` falling linearly to 0, in the
        float32 arithmetic the step has always used."""
        rates = np.full(self.iters, np.float32(rate), np.float32)
        if self.anneal:
            # rate * (1 - i / iters) as XLA computes it: i times the float32 reciprocal, subtracted from 1 in one
            # fused multiply-add (exact in float64: the product of two float32s fits), then rounded once.
            reciprocal = np.float64(np.float32(1.0) / np.float32(self.iters))
            left = (1.0 - np.arange(self.iters, dtype=np.float64) * reciprocal).astype(np.float32)
            rates = rates * left
        return rates


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """The parts of a ``DreamConfig`` that decide one iteration's program (a branch adds its layer and view size):
    programs of configs that differ only in range, iterations, octave count or schedule are shared."""

    objective: str
    param: str
    transform: str
    norm: str
    gray_pull: float
    precision: str

    @property
    def parameterisation(self) -> Parameterisation:
        return PARAMETERISATIONS[self.param]

    @property
    def transformation(self) -> Transform:
        return TRANSFORMS[self.transform]


def round_key(seed: Array | int, round_index: Array | int) -> Array:
    """The key a round's schedule is drawn from: the same for every image, batch, device and process."""
    return jax.random.fold_in(jax.random.key(seed), round_index)


def draw_schedule(key: Array, config: DreamConfig) -> Array:
    """(iters, 5) int32 rows of layer, octave, dx, dy, flip — Darknet's draws, from a JAX key."""
    k_layer, k_octave, k_dx, k_dy, k_flip = jax.random.split(key, 5)
    n = config.iters
    layer = config.layers[0] + jax.random.randint(k_layer, (n,), 0, config.layer_range)
    if not config.jitter:
        zeros = jnp.zeros((n,), jnp.int32)
        return jnp.stack([layer, zeros, zeros, zeros, zeros], axis=1).astype(jnp.int32)
    octave = jax.random.randint(k_octave, (n,), 0, config.octaves)
    dx = jax.random.randint(k_dx, (n,), -SHIFT_RANGE, SHIFT_RANGE)
    dy = jax.random.randint(k_dy, (n,), -SHIFT_RANGE, SHIFT_RANGE)
    flip = jax.random.randint(k_flip, (n,), 0, 2)
    jitter = jnp.stack([octave, dx, dy, flip], axis=1)
    still = jnp.arange(n) >= n - round(n * config.settle)
    return jnp.concatenate([layer[:, None], jnp.where(still[:, None], 0, jitter)], axis=1).astype(jnp.int32)


Objective = Callable[..., Array]  # (params, images (N, h, w, 3), layer, aux[, valid]) -> values (N,)


def objective_function(model: Model, name: str, precision: str, shared_aux: bool = True,
                       canvas: bool = False) -> Objective:
    """The values a dream ascends, one per image of a batch: a layer objective on that layer's output (aux: the
    threshold, a channel or the guide's features), or a logit objective on the classifier's logits (aux: the target
    vector); ``aux`` shared by the batch, or (``shared_aux`` False) one per image. The network runs on the batch as
    a whole (tracing it once, not once per image under vmap); only the objective is taken image by image.
    ``canvas``: the images are canvases and the objective takes ``valid`` (N, 1 + layers, 2), each image's true
    size at the input and every layer's output (``Model.apply_on_canvas``)."""
    axes = (0, None if shared_aux else 0)
    if name in LOGIT_OBJECTIVES:
        on_logits = jax.vmap(LOGIT_OBJECTIVES[name], in_axes=axes)
        return lambda params, images, layer, aux: on_logits(model.apply_logits(params, images, precision), aux)
    on_layer = jax.vmap(LAYER_OBJECTIVES[name], in_axes=axes)

    def objective(params: Any, images: Array, layer: int, aux: Any) -> Array:
        return on_layer(model.apply(params, model.normalize(images), (layer,), precision)[layer], aux)

    if not canvas:
        return objective
    in_region = jax.vmap(LAYER_OBJECTIVES[name], in_axes=(*axes, 0))

    def on_canvas(params: Any, images: Array, layer: int, aux: Any, valid: Array) -> Array:
        out = model.apply_on_canvas(params, model.normalize(images), (layer,), valid, precision)[layer]
        return in_region(out, aux, region_mask(valid[:, layer + 1], *out.shape[1:3]))

    return on_canvas


def values_and_gradients(objective: Objective, params: Any, images: Array, layer: int, aux: Any,
                         *valid: Array) -> tuple[Array, Array]:
    """Each image's objective value (N,) and its gradient (N, h, w, 3): the gradient of the batch's sum, since an
    image's value depends on that image alone."""

    def total(views: Array) -> tuple[Array, Array]:
        values = objective(params, views, layer, aux, *valid)
        return jnp.sum(values), values

    (_, values), grads = jax.value_and_grad(total, has_aux=True)(images)
    return values, grads


def branch_step(model: Model, step: StepConfig, layer: int, view: tuple[int, int], shared_aux: bool = True,
                canvas: bool = False) -> Callable:
    """One iteration of one branch, Darknet's ``optimize_picture`` at ``layer`` on the image viewed at ``view``:
    (params, images (N, H, W, 3), row (5,) = layer, octave, dx, dy, flip, rates (N,), aux) -> (the new images,
    the objective's values before the step (N,)). ``aux`` is shared by the batch, or (``shared_aux`` False) one per
    image: a sweep's grid of thresholds.

    ``canvas``: the images are canvases (each image's pixels in the top-left corner, zeros beyond) and the step
    takes one more argument, ``valid`` (N, 3 + layer, 2): each image's true (h, w), its view's at this branch,
    and every layer's output's up to ``layer`` (``canvas_sizes``). One program then serves every image size that
    fits the canvas, each image getting the values of its own size's program up to the order of float sums."""
    objective = objective_function(model, step.objective, step.precision, shared_aux, canvas)
    param, transform = step.parameterisation, step.transformation

    def dream_step(params: Any, images: Array, row: Array, rates: Array, aux: Any,
                   valid: Array | None = None) -> tuple[Array, Array]:
        full = (images.shape[1], images.shape[2])
        regions = None if valid is None else Region(valid[:, 0], valid[:, 1])

        def look(image: Array, region: Region | None) -> Array:
            at = {} if region is None else {"region": region}  # parts without a canvas form take no region
            return transform.inside(param.view(transform.before(image, row, **at), view, **at), row, **at)

        def back(grad: Array, region: Region | None) -> Array:
            at = {} if region is None else {"region": region}
            return param.back(transform.inside(grad, row, **at), full, **at)

        def update(image: Array, grad: Array, rate: Array, region: Region | None) -> Array:
            return apply_gradient(step, image, grad, row, rate, region)

        small = jax.vmap(look)(images, regions)
        values, grads = values_and_gradients(objective, params, small, layer, aux,
                                             *(() if valid is None else (valid[:, 1:],)))
        return jax.vmap(update)(images, jax.vmap(back)(grads, regions), rates, regions), values

    return dream_step


def fused_round(model: Model, config: DreamConfig) -> Callable:
    """Iterations ``start`` .. ``stop - 1`` of a round in one program: (params, images (N, H, W, 3), values
    (iters, N), schedule (iters, 5), start, stop, rates (iters, N), aux) -> (images, values). Each iteration picks
    its branch with ``lax.switch`` among the very ``branch_step`` programs the host otherwise dispatches one by one,
    so both give the same bytes. On a CPU the loop is faster (XLA allocates its buffers once, not at every call:
    ~20 % at 768x576); the branches compile sooner, one by one and in parallel, and are shared."""

    def run(params: Any, images: Array, values: Array, schedule: Array, start: Array, stop: Array, rates: Array,
            aux: Any) -> tuple[Array, Array]:
        views = config.parameterisation.sizes(images.shape[1], images.shape[2], config.octave_count)
        branches = [branch_step(model, config.step, layer, view) for layer in config.layers for view in views]
        n = config.octave_count

        def body(i: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
            row = schedule[i]
            index = (row[0] - config.layers[0]) * n + jnp.minimum(row[1], n - 1)
            stepped, value = lax.switch(index, branches, params, carry[0], row, rates[i], aux)
            return stepped, carry[1].at[i].set(value)

        if not config.iters:  # tracing the body indexes the empty schedule
            return images, values
        return lax.fori_loop(start, stop, body, (images, values))

    return run


def apply_gradient(step: StepConfig, image: Array, grad: Array, row: Array, rate: Array,
                   region: Region | None = None) -> Array:
    """The rest of ``optimize_picture`` once the gradient (of the transformed image, at full size) is known: undo
    the transform, add the pull to gray, normalise, step and clip (on a canvas: over the image's region, zeros
    beyond)."""
    at = {} if region is None else {"region": region}
    update = step.transformation.undo_before(grad, row, **at) + I.rounded(step.gray_pull * (0.5 - image))
    inside = None if region is None else region_mask(region.full[None], *image.shape[:2])[0]
    if step.norm == "std":
        mean = region_mean(update, inside)
        std = jnp.sqrt(region_mean(jnp.square(update - mean), inside))
        # A flat update (e.g. -thresh 1000 selects nothing on a flat image) has no direction: Darknet divides by
        # zero and writes NaN; no step is the answer that stays an image.
        update = jnp.where(std > 0, (update - mean) / std, 0.0)
    elif step.norm == "mean_abs":
        update = update / (region_mean(jnp.abs(update), inside) + 1e-8)
    stepped = jnp.clip(image + I.rounded(rate * update), 0.0, 1.0)
    return stepped if inside is None else jnp.where(inside, stepped, 0.0)


def round_schedule(config: DreamConfig) -> Callable:
    """(seed uint32, round int32) -> the round's schedule (iters, 5), drawn as ``draw_schedule`` does."""
    return lambda seed, index: draw_schedule(round_key(seed, index), config)


def between_rounds(zoom: float, rotate: float) -> Callable:
    """Darknet's rotate, then zoom, applied to the images between rounds."""

    def post(images: Array) -> Array:
        if rotate:
            images = I.rotate(images, rotate)
        return I.zoom(images, zoom) if zoom != 1.0 else images

    return post


def pyramid_start(size: tuple[int, int]) -> Callable:
    """(images (full), detail (previous octave's size)) -> (the images at ``size``, where this octave's dream
    starts: those images plus the detail carried up)."""

    def start(images: Array, detail: Array) -> tuple[Array, Array]:
        shape = (images.shape[0], *size, 3)
        base = jax.image.resize(images, shape, "linear")
        return base, jnp.clip(base + jax.image.resize(detail, shape, "linear"), 0.0, 1.0)

    return start


def pyramid_finish(images: Array, detail: Array) -> Array:
    """The full-size images with the last octave's detail added."""
    return jnp.clip(images + jax.image.resize(detail, images.shape, "linear"), 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class ReconstructConfig:
    """Darknet's ``-reconstruct`` options (checked when built)."""

    layer: int  # the target layer (Darknet's max_layer - 1)
    iters: int = 10
    rate: float = 0.04
    momentum: float = 0.9
    lam: float = 0.01
    smooth: int = 1
    precision: str | None = None  # None: $JAXDREAM_PRECISION or f32

    def __post_init__(self) -> None:
        check_count("iters", self.iters, 0)
        check_count("smooth", self.smooth, 0)
        for name, value in (("rate", self.rate), ("momentum", self.momentum), ("lambda", self.lam)):
            check_number(name, value, 0.0)
        object.__setattr__(self, "precision", resolve_precision(self.precision))


def reconstruct_target(model: Model, config: ReconstructConfig, net_hw: tuple[int, int]) -> Callable:
    """(params, images) -> (letterboxed images, their features at the target layer)."""

    def prepare(params: Any, images: Array) -> tuple[Array, Array]:
        boxed = I.letterbox(images, *net_hw)
        return boxed, model.apply(params, model.normalize(boxed), (config.layer,), config.precision)[config.layer]

    return prepare


def reconstruct_iterations(model: Model, config: ReconstructConfig) -> Callable:
    """(params, images, update, features, count) -> (images, update): ``count`` steps of ascent toward the features
    with momentum (the host calls it in chunks)."""
    layer = config.layer

    def one(params: Any, img: Array, upd: Array, feat: Array) -> tuple[Array, Array]:
        objective = lambda im: reconstruction_objective(
            model.apply(params, model.normalize(im[None]), (layer,), config.precision)[layer][0], feat
        )
        upd = upd + jax.grad(objective)(img)
        if config.lam and config.smooth:
            upd = smooth(upd, img, config.lam, config.smooth)
        img = jnp.clip(img + config.rate * upd, 0.0, 1.0)
        return img, config.momentum * upd

    def run(params: Any, recon: Array, update: Array, feats: Array, count: Array) -> tuple[Array, Array]:
        step = jax.vmap(lambda img, upd, feat: one(params, img, upd, feat))
        return lax.fori_loop(0, count, lambda _, carry: step(carry[0], carry[1], feats), (recon, update))

    return run


def smooth(update: Array, recon: Array, lam: float, size: int) -> Array:
    """Darknet's ``smooth``: update += lam * sum over the (2*size+1)^2 window inside the image of (nb - self)."""
    window = (2 * size + 1, 2 * size + 1, 1)
    pad = ((size, size), (size, size), (0, 0))
    total = lax.reduce_window(recon, 0.0, lax.add, window, (1, 1, 1), pad)
    # The neighbours inside the image, as rows x columns: summing a window over ones instead is constant-folded by
    # XLA at compile time, seconds (and a logged alarm) at network sizes.
    count = _inside(recon.shape[0], size)[:, None, None] * _inside(recon.shape[1], size)[None, :, None]
    return update + lam * (total - count * recon)


def _inside(n: int, size: int) -> Array:
    """How many of the positions i - size .. i + size lie in 0 .. n - 1, for each i."""
    i = jnp.arange(n)
    return (jnp.minimum(i + size, n - 1) - jnp.maximum(i - size, 0) + 1).astype(jnp.float32)
