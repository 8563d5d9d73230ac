"""Darknet's nightmare as one compiled program per round.

A round is a jitted ``lax.fori_loop`` over the iterations. Each iteration's random choices (layer in the range,
octave, shift, flip) come from a schedule drawn from a jax.random key inside the same program (or given
explicitly, to replay Darknet's own draws). The layer/octave choice picks a branch of ``lax.switch``: each branch
is a fixed-shape program (resize to the octave, flip, gradient of the objective, back). The choices are shared by
the whole batch, so under vmap the switch stays a switch instead of running every branch.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from jaxdream import image as I
from jaxdream.errors import JaxdreamError, OptionError
from jaxdream.model import ModelBase as Model
from jaxdream.objectives import LAYER_OBJECTIVES, reconstruction_objective

Array = jax.Array
OCTAVE_BASE = 1.33333333  # Darknet's literal
GRAY_PULL = 0.1
SHIFT_RANGE = 8  # dx, dy in [-8, 7]


Objective = Callable[[Model, Any, Array, int, Any], Array]  # (model, params, image (h,w,3), layer, aux) -> scalar


@functools.cache
def layer_objective_for(kind: str) -> Objective:
    """An objective on one layer's output: 'darknet' (aux = threshold in std), 'l2', 'channel'/'neuron' (aux =
    channel index), 'guide' (aux = the guide image's features, (positions, channels))."""
    if kind not in LAYER_OBJECTIVES:
        raise OptionError(f"unknown objective {kind!r}; valid: {', '.join(LAYER_OBJECTIVES)}")
    function = LAYER_OBJECTIVES[kind]

    def objective(model: Model, params: Any, image: Array, layer: int, aux: Any) -> Array:
        return function(model.apply(params, model.normalize(image[None]), (layer,))[layer][0], aux)

    return objective


layer_objective = layer_objective_for("darknet")
NORMS = ("std", "mean_abs", "none")  # Darknet's normalize_array, Google's mean |g|, or the raw update


@dataclass(frozen=True)
class DreamConfig:
    """What a round computes; everything that changes the compiled program's shape."""

    layer: int
    layer_range: int = 1
    iters: int = 10
    octaves: int = 4
    norm: str = "std"  # one of NORMS
    jitter: bool = True
    objective: Objective = layer_objective
    gray_pull: float = GRAY_PULL
    anneal: bool = False  # step size falls linearly to 0 over the round (lets a mixed target settle)
    settle: float = 0.0  # final fraction of the round drawn without jitter: steps on the view that gets classified

    @property
    def layers(self) -> tuple[int, ...]:
        """Darknet draws ``layer + rand() % range - range / 2``."""
        first = self.layer - self.layer_range // 2
        return tuple(range(first, first + self.layer_range))


@dataclass
class RunStats:
    """Timings of the compiled programs, kept apart: compile time is never counted as run time."""

    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    iterations: int = 0
    program_peak_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        per_iter = 1000.0 * self.run_seconds / self.iterations if self.iterations else None
        return {"compile_seconds": self.compile_seconds, "run_seconds": self.run_seconds,
                "iterations": self.iterations, "ms_per_iteration": per_iter,
                "program_peak_bytes": self.program_peak_bytes, **self.extra}


def program_peak_bytes(compiled: jax.stages.Compiled) -> int | None:
    """Device memory a compiled program holds: its arguments, outputs and the temporaries XLA's buffer assignment
    allocates (already reused between ops); None where the backend does not say."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    # Not m.peak_memory_in_bytes: XLA:CPU leaves the temporaries out of it.
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def octave_size(height: int, width: int, octave: int) -> tuple[int, int]:
    """(int)(size * scale) with Darknet's float scale = 1 / 1.33333333^octave."""
    scale = np.float32(1.0 / math.pow(OCTAVE_BASE, octave))
    return int(np.float32(height) * scale), int(np.float32(width) * scale)


def _check_finite(name: str, value: float, minimum: float | None = None, strict: bool = False) -> None:
    if not math.isfinite(value):
        raise OptionError(f"--{name} {value} is not a finite number")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise OptionError(f"--{name} {value} must be {'greater than' if strict else 'at least'} {minimum}")


def validate(model: Model, config: DreamConfig, height: int, width: int) -> None:
    """Every layer the run may visit exists, can run, and has a non-empty output at every octave size."""
    for name, value in (("iters", config.iters), ("range", config.layer_range), ("octaves", config.octaves)):
        if value < (0 if name == "iters" else 1):
            raise OptionError(f"--{name} {value} must be at least {0 if name == 'iters' else 1}")
    for layer in config.layers:
        model.check_layer(layer, "layer" if config.layer_range == 1 else f"layer (from --range {config.layer_range})")
    for octave in range(config.octaves if config.jitter else 1):
        oh, ow = octave_size(height, width, octave)
        try:
            fits = min(oh, ow) >= 1 and bool(model.layer_output_shapes(oh, ow, max(config.layers)))
        except JaxdreamError:
            fits = False
        if not fits:
            raise OptionError(
                f"the {width}x{height} image is too small: at octave {octave} ({ow}x{oh}) layer {max(config.layers)} "
                "of the network has no output; use a larger image, fewer --octaves or an earlier layer"
            )


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


def _gradient_branch(
    model: Model, objective: Objective, layer: int, size: tuple[int, int], full: tuple[int, int]
) -> Callable:
    """Input gradient of the objective at one (layer, octave): resize, flip, grad, un-flip, resize back."""

    def branch(params: Any, shifted: Array, flip: Array, aux: Any) -> Array:
        small = I.flip_if(I.darknet_resize(shifted, *size), flip)
        value, grad = jax.value_and_grad(lambda img: objective(model, params, img, layer, aux))(small)
        return value, I.darknet_resize(I.flip_if(grad, flip), *full)

    return branch


def nightmare_step(
    model: Model, config: DreamConfig, params: Any, image: Array, row: Array, rate: Array, aux: Any
) -> tuple[Array, Array]:
    """One Darknet ``optimize_picture`` on one (H, W, 3) image for schedule row (layer, octave, dx, dy, flip);
    returns the new image and the objective's value before the step.

    ``aux`` is the objective's extra input (the threshold for nightmare, the target vector for lucid).
    """
    h, w = image.shape[0], image.shape[1]
    n_octaves = config.octaves if config.jitter else 1
    branches = [
        _gradient_branch(model, config.objective, layer, octave_size(h, w, octave), (h, w))
        for layer in config.layers for octave in range(n_octaves)
    ]
    layer, octave, dx, dy, flip = row[0], row[1], row[2], row[3], row[4]
    index = (layer - config.layers[0]) * n_octaves + jnp.minimum(octave, n_octaves - 1)
    value, grad = lax.switch(index, branches, params, I.shift(image, dx, dy), flip.astype(bool), aux)
    update = I.shift(grad, -dx, -dy) + I.rounded(config.gray_pull * (0.5 - image))
    if config.norm == "std":
        mean = jnp.mean(update)
        update = (update - mean) / jnp.sqrt(jnp.mean(jnp.square(update - mean)))
    elif config.norm == "mean_abs":
        update = update / (jnp.mean(jnp.abs(update)) + 1e-8)
    return jnp.clip(image + I.rounded(rate * update), 0.0, 1.0), value


def round_program(model: Model, config: DreamConfig, trace: bool = False) -> Callable:
    """The pure round: (params, images (N,H,W,3), schedule (iters,5), rate, aux) -> images, or with ``trace``
    (images, objective values (iters, N))."""

    def run(params: Any, images: Array, schedule: Array, rate: Array, aux: Any) -> Any:
        def body(i: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
            imgs, values = carry
            step_rate = rate * (1.0 - i / config.iters) if config.anneal else rate
            step = lambda img: nightmare_step(model, config, params, img, schedule[i], step_rate, aux)
            imgs, value = jax.vmap(step)(imgs)
            return imgs, values.at[i].set(value)

        values = jnp.zeros((config.iters, images.shape[0]), jnp.float32)
        if config.iters:  # tracing the body indexes the empty schedule, so -iters 0 (Darknet: no steps) skips it
            images, values = lax.fori_loop(0, config.iters, body, (images, values))
        return (images, values) if trace else images

    return run


def random_round_program(model: Model, config: DreamConfig, trace: bool = False) -> Callable:
    """The round with its schedule drawn inside the program: (params, images, key, rate, aux) -> images."""
    run = round_program(model, config, trace)
    return lambda params, images, key, rate, aux: run(params, images, draw_schedule(key, config), rate, aux)


def _postprocess_program(zoom_factor: float, rotate_radians: float) -> Callable:
    def post(images: Array) -> Array:
        if rotate_radians:
            images = I.rotate(images, rotate_radians)
        return I.zoom(images, zoom_factor) if zoom_factor != 1.0 else images

    return post


def _run_rounds(
    step: Callable[[Array, int], Array], images: Array, rounds: int, iters: int, zoom: float, rotate: float,
    on_round: Callable[[int, np.ndarray], None] | None, stats: RunStats,
) -> np.ndarray:
    """Darknet's round loop: run a round, hand the frame out, then rotate and zoom for the next round."""
    post = jax.jit(_postprocess_program(zoom, rotate))
    frames = []
    for r in range(rounds):
        images = step(images, r)
        stats.iterations += iters
        frames.append(np.asarray(images))
        if on_round is not None:
            on_round(r, frames[-1])
        if r + 1 < rounds and (zoom != 1.0 or rotate):
            images = post(images)
    return np.stack(frames)


class _Compiled:
    """jit + ahead-of-time compile with the compile time recorded, cached per argument shapes."""

    def __init__(self, fn: Callable, stats: RunStats):
        self.jitted, self.stats, self.cache = jax.jit(fn), stats, {}

    def __call__(self, *args: Any) -> Any:
        signature = tuple((np.shape(a), getattr(a, "dtype", None)) for a in jax.tree_util.tree_leaves(args))
        if signature not in self.cache:
            start = time.perf_counter()
            self.cache[signature] = self.jitted.lower(*args).compile()
            self.stats.compile_seconds += time.perf_counter() - start
            peak = program_peak_bytes(self.cache[signature])
            if peak is not None:
                self.stats.program_peak_bytes = max(peak, self.stats.program_peak_bytes or 0)
        start = time.perf_counter()
        out = jax.block_until_ready(self.cache[signature](*args))
        self.stats.run_seconds += time.perf_counter() - start
        return out


def as_batch(x: Any) -> tuple[Array, bool]:
    """(N, H, W, 3) float32 images; a JAX array keeps its placement (e.g. sharded over devices)."""
    x = x.astype(jnp.float32) if isinstance(x, jax.Array) else jnp.asarray(np.asarray(x, np.float32))
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4 or x.shape[-1] != 3:
        raise OptionError(f"images must be (H, W, 3) or (N, H, W, 3) float arrays, got shape {x.shape}")
    return x, False


def placed_params(model: Model, images: Array) -> Any:
    """The parameters on the device(s) once per run: replicated over the images' mesh when they are sharded."""
    sharding = getattr(images, "sharding", None)
    if isinstance(sharding, NamedSharding):
        return jax.device_put(model.params, NamedSharding(sharding.mesh, PartitionSpec()))
    return jax.device_put(model.params)


def _check_schedule(schedule: Any, config: DreamConfig) -> Array:
    schedule = np.asarray(schedule, np.int64)
    if schedule.shape != (config.iters, 5):
        raise OptionError(f"schedule must have shape (iters, 5) = ({config.iters}, 5), got {schedule.shape}")
    layers, octaves = schedule[:, 0], schedule[:, 1]
    if not np.isin(layers, config.layers).all():
        raise OptionError(f"schedule layers {sorted(set(layers.tolist()))} are outside the range {config.layers}")
    if octaves.min() < 0 or octaves.max() >= config.octaves:
        raise OptionError(f"schedule octaves must be in 0 .. {config.octaves - 1}")
    return jnp.asarray(schedule, jnp.int32)


def nightmare(
    model: Model, x: Any, layer: int, rounds: int = 1, iters: int = 10, layer_range: int = 1, octaves: int = 4,
    rate: float = 0.04, thresh: float = 1.0, zoom: float = 1.0, rotate: float = 0.0, norm: bool = True,
    jitter: bool = True, seed: int = 0, schedule: Any = None, objective: str = "darknet", channel: int = 0,
    guide: Any = None, on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
) -> np.ndarray:
    """Darknet's nightmare on an image (H, W, 3) or batch (N, H, W, 3) in [0, 1] -> (rounds, N, H, W, 3).

    ``schedule``: optional (iters, 5) int rows of layer, octave, dx, dy, flip replacing the random draws
    (used for every round). ``objective``: 'darknet' (thresholded L2, the default), 'l2', 'channel' or 'neuron'
    (with ``channel``), or 'guide' (with ``guide``, an image whose features at ``layer`` the dream moves toward).
    ``on_round(round, images)`` is called after each round, before zoom/rotate.
    """
    images, _ = as_batch(x)
    config = DreamConfig(layer, layer_range, iters, octaves, "std" if norm else "none", bool(jitter),
                         layer_objective_for(objective))
    _check_finite("thresh", thresh)
    check_round_options(rate, rounds, zoom, rotate)
    validate(model, config, images.shape[1], images.shape[2])
    aux = objective_input(model, config, objective, thresh, channel, guide)
    return run_dream(model, images, config, rate, aux, rounds, zoom, rotate, seed, schedule, on_round, stats)


def objective_input(model: Model, config: DreamConfig, objective: str, thresh: float, channel: int,
                    guide: Any) -> Any:
    """The ``aux`` argument each layer objective takes, checked against the layers it may run on."""
    if objective == "darknet":
        return jnp.float32(thresh)
    if objective in ("channel", "neuron"):
        for layer in config.layers:
            channels = model.layer_output_shapes(*model.input_size, layer)[-1][2]
            if not 0 <= channel < channels:
                raise OptionError(
                    f"--channel {channel} is out of range: layer {layer} has channels 0 .. {channels - 1}"
                )
        return jnp.int32(channel)
    if objective == "guide":
        if guide is None:
            raise OptionError("the guide objective needs a guide image (--guide FILE)")
        if config.layer_range != 1:
            raise OptionError("the guide objective needs --range 1: the guide's features belong to one layer")
        features = model.forward(np.asarray(guide, np.float32)[None], config.layer)[config.layer][0]
        return features.reshape(-1, features.shape[-1])
    return jnp.float32(0)


def deepdream(
    model: Model, x: Any, layer: int, octaves: int = 4, octave_scale: float = 1.4, iters: int = 10,
    rate: float = 0.01, objective: str = "l2", channel: int = 0, guide: Any = None, jitter: bool = True,
    seed: int = 0, stats: RunStats | None = None,
) -> np.ndarray:
    """Google's DeepDream: an octave pyramid from small to full size, the detail the dream adds carried up from
    octave to octave, each step normalised by the gradient's mean absolute value. -> (1, N, H, W, 3).

    Each octave runs the same compiled loop as a nightmare round (one program per octave size). Jitter is
    Darknet's edge-clamped shift of up to 8 px and a flip, where Google rolls the image.
    """
    images, _ = as_batch(x)
    _check_finite("rate", rate, 0.0)
    _check_finite("octave_scale", octave_scale, 1.0, strict=True)
    config = DreamConfig(layer, 1, iters, 1, "mean_abs", bool(jitter), layer_objective_for(objective), 0.0)
    h, w = images.shape[1], images.shape[2]
    sizes = [(max(1, round(h / octave_scale**k)), max(1, round(w / octave_scale**k))) for k in range(octaves)][::-1]
    for size in sizes:
        validate(model, DreamConfig(layer, 1, iters, 1), *size)
    aux = objective_input(model, config, objective, 0.0, channel, guide)
    stats = stats if stats is not None else RunStats()
    detail = jnp.zeros((images.shape[0], *sizes[0], 3), jnp.float32)
    for k, size in enumerate(sizes):
        base = jax.image.resize(images, (images.shape[0], *size, 3), "linear")
        detail = jax.image.resize(detail, base.shape, "linear")
        start = jnp.clip(base + detail, 0.0, 1.0)
        dreamed = run_dream(model, start, config, rate, aux, seed=seed + k, stats=stats)[0]
        detail = jnp.asarray(dreamed) - base
    return np.asarray(jnp.clip(images + jax.image.resize(detail, images.shape, "linear"), 0.0, 1.0))[None]


def round_key(seed: int, round_index: int) -> Array:
    """The key a round's schedule is drawn from: the same for every image, batch, device and process."""
    return jax.random.fold_in(jax.random.key(seed), round_index)


def check_round_options(rate: float, rounds: int, zoom: float, rotate: float) -> None:
    _check_finite("rate", rate, 0.0)
    _check_finite("zoom", zoom, 0.0, strict=True)
    _check_finite("rotate", rotate)
    if rounds < 1:
        raise OptionError(f"--rounds {rounds} must be at least 1")


def run_dream(
    model: Model, images: Array, config: DreamConfig, rate: float, aux: Any, rounds: int = 1, zoom: float = 1.0,
    rotate: float = 0.0, seed: int = 0, schedule: Any = None,
    on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
) -> np.ndarray:
    """The rounds of any objective: one compiled round program, called once per round (options validated)."""
    stats = stats if stats is not None else RunStats()
    rate_a = jnp.float32(rate)
    params = placed_params(model, images)
    if schedule is not None:
        fixed = _check_schedule(schedule, config)
        program = _Compiled(round_program(model, config), stats)
        step = lambda imgs, r: program(params, imgs, fixed, rate_a, aux)
    else:
        program = _Compiled(random_round_program(model, config), stats)
        step = lambda imgs, r: program(params, imgs, round_key(seed, r), rate_a, aux)
    return _run_rounds(step, images, rounds, config.iters, zoom, rotate, on_round, stats)


def _smooth(update: Array, recon: Array, lam: float, size: int) -> Array:
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


def reconstruct(
    model: Model, x: Any, layer: int, rounds: int = 1, iters: int = 10, rate: float = 0.04, momentum: float = 0.9,
    lam: float = 0.01, smooth: int = 1, zoom: float = 1.0, rotate: float = 0.0,
    on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
) -> np.ndarray:
    """Darknet's ``-reconstruct`` mode: letterbox to the network size, then ascend toward layer ``layer - 1``'s
    features of that image with momentum. Returns (rounds, N, net_h, net_w, 3).

    Darknet parses ``-lambda``/``-smooth`` but its call to ``smooth`` is commented out; here the smoothing is
    applied, so the options do what they say (``lam=0`` reproduces Darknet exactly).
    """
    target = layer - 1  # Darknet sets net->n = max_layer, so the features are those of layer max_layer - 1
    model.check_layer(target, "layer - 1 (reconstruct uses the layer before LAYER)")
    for name, value in (("rate", rate), ("momentum", momentum), ("lambda", lam), ("zoom", zoom)):
        _check_finite(name, value, 0.0, strict=name == "zoom")
    if smooth < 0 or iters < 0 or rounds < 1:
        raise OptionError("--smooth and --iters must be >= 0 and --rounds >= 1")
    images, _ = as_batch(x)
    net_h, net_w = model.input_size
    images = I.letterbox(images, net_h, net_w)
    features = model.forward(images, target)[target]
    stats = stats if stats is not None else RunStats()

    def run(params: Any, recon: Array, update: Array, feats: Array) -> tuple[Array, Array]:
        def one(img: Array, upd: Array, feat: Array) -> tuple[Array, Array]:
            objective = lambda im: reconstruction_objective(
                model.apply(params, model.normalize(im[None]), (target,))[target][0], feat
            )
            upd = upd + jax.grad(objective)(img)
            if lam and smooth:
                upd = _smooth(upd, img, lam, smooth)
            img = jnp.clip(img + rate * upd, 0.0, 1.0)
            return img, momentum * upd

        def body(_: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
            return jax.vmap(one)(carry[0], carry[1], feats)

        return lax.fori_loop(0, iters, body, (recon, update))

    program = _Compiled(run, stats)
    momentum_state = [jnp.zeros_like(images)]  # Darknet keeps the update across rounds

    def step(imgs: Array, _: int) -> Array:
        imgs, momentum_state[0] = program(model.params, imgs, momentum_state[0], features)
        return imgs

    return _run_rounds(step, images, rounds, iters, zoom, rotate, on_round, stats)
