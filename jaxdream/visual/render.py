"""``render``: images optimised from noise (or a photo) toward an objective, the feature-visualisation recipe.

Each step: the parameters become images (``params.ImageParam``), each image passes its own random transforms
(``transforms``), the network's requested layers (and logits) are computed for the batch at once, the objective
(``jaxdream.objectives``' algebra) is summed over the items, and Adam (optax) ascends it. A whole run is one
compiled program per (model, objective structure, parameterisation, transforms, size, batch, steps' rate):
weights, channels, classes, positions and directions are arguments, so changing them compiles nothing; the host
calls it in chunks of about a second (Ctrl-C, progress).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdream import checks, progress
from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.placement import placed_params
from jaxdream.compiled.stats import RunStats
from jaxdream.dream.engine import run_in_chunks
from jaxdream.dream.lucid_mode import parse_classes, target_vector
from jaxdream.errors import OptionError
from jaxdream.objectives import (
    LOGIT_KINDS,
    Objective,
    Term,
    class_objective,
    diversity,
    diversity_value,
    parse_objective,
    term_value,
)
from jaxdream.ops import redirected_relus, resolve_precision
from jaxdream.visual import transforms as T
from jaxdream.visual.params import IMAGENET_COLOUR_SQRT, ImageParam, default_spectrum, register_spectrum

if TYPE_CHECKING:
    from jaxdream.protocol import Model

Array = jax.Array
Structure = tuple[tuple[str, int | None, bool, Any], ...]  # per term: kind, layer, has a position, vector shape
TARGET_SCALE = 100.0  # the BCE target's scale, as lucid's
MAX_COLOUR_CONDITION = 1e6  # a colour map this close to singular would blow decorrelated values up
# A render runs hundreds of steps: on the CPU its program gets LLVM's full optimisation (level 3), not the
# compile-time-saving level 2 of the dream programs: SqueezeNet's gradient at batch 16 ran 20 % slower at level 2.
# Min and max that need not propagate NaN (a NaN image fails its checks anyway) and 512-bit vectors: the batch-16
# SqueezeNet step 0.250 -> 0.218 s (in-process A/B, benchmarks/NOTES.md).
STEPS_OPTIONS: dict[str, tuple[tuple[str, Any], ...]] = {
    "cpu": (("xla_backend_optimization_level", 3), ("xla_cpu_enable_fast_min_max", True),
            ("xla_cpu_prefer_vector_width", 512))}


def render(model: Model, objective: Objective | str, *, param: str = "fft", size: int | tuple[int, int] = 224,
           steps: int = 256, batch: int = 1, transforms: str | Sequence[T.Transform] = "standard",
           diversity: float = 0.0, seed: int = 0, lr: float = 0.05, decorrelate: bool = True, decay: float = 1.0,
           colour: Any = None, value_range: str = "sigmoid", redirect: bool = False, init: Any = None,
           spectrum: Any = None, crops: int = 1, precision: str | None = None, stats: RunStats | None = None,
           item_seeds: Any = None, attribution: bool = False) -> Any:
    """Images (batch, H, W, 3) in [0, 1] that ``objective`` (an ``Objective`` or its text, ``parse_objective``)
    rates highly, from noise (or from ``init``, an image (H, W, 3) every item starts from). ``param``: 'fft' or
    'pixel'; ``transforms``: 'standard' or 'none'; ``diversity``: the weight of a term pushing the batch's items
    apart (at the objective's deepest layer); ``transforms`` may also be a chain of ``visual.transforms``
    objects. ``colour``: the 3x3 square root of a colour covariance for ``decorrelate`` (``colour_from_photos``;
    ImageNet's by default); ``value_range``: 'sigmoid' or 'clip'; ``redirect``: every ReLU passes gradients that
    would raise a dead unit (lucid's redirected ReLU). Each item draws its noise and transforms from ``seed`` and
    its own ``item_seeds`` entry (default: its index), so an item's image does not depend on the others in the
    batch (without diversity): an atlas gives a unit the same picture in any batch. ``param='maco'`` keeps the
    magnitude ``spectrum`` (3, H, W // 2 + 1) fixed (``params.spectrum_from_photos``; the sample photo's by
    default) and is best with ``transforms='maco'``; ``crops``: transformed views of each item per step, their
    objective averaged. ``attribution``: also return each item's attribution map (batch, H, W) in [0, 1], the
    |gradient| of the objective with respect to the image, summed over colours and steps (MACO's "transparency":
    where the visualisation matters to the network), as (images, maps)."""
    objective = parse_objective(objective) if isinstance(objective, str) else objective
    height, width = (int(size), int(size)) if isinstance(size, Integral) else (int(size[0]), int(size[1]))
    checks.check_count("steps", steps, 0)
    checks.check_count("batch", batch, 1)
    checks.check_seed(seed)
    checks.check_number("lr", lr, 0.0, strict=True)
    checks.check_number("diversity", diversity, 0.0)
    colour = IMAGENET_COLOUR_SQRT if colour is None else np.asarray(colour, np.float32)
    if colour.shape != (3, 3) or not np.isfinite(colour).all() or np.linalg.cond(colour) > MAX_COLOUR_CONDITION:
        raise OptionError("colour must be a well-conditioned 3x3 matrix (the square root of a colour covariance)")
    checks.check_count("crops", crops, 1)
    digest = ""
    if param == "maco":
        magnitude = default_spectrum(height, width, colour) if spectrum is None else np.asarray(spectrum, np.float32)
        if magnitude.shape != (3, height, width // 2 + 1):
            raise OptionError(f"the spectrum {magnitude.shape} was made for another size; a {width}x{height} render "
                              f"needs (3, {height}, {width // 2 + 1}): `jaxdream spectrum --size {width}x{height}`")
        digest = register_spectrum(magnitude)
    image_param = ImageParam(param, int(height), int(width), float(decay), bool(decorrelate), value_range,
                             tuple(map(tuple, colour.tolist())), digest)
    chain = T.preset(transforms) if isinstance(transforms, str) else tuple(transforms)
    T.output_size(chain, height, width)
    if diversity:
        if crops > 1:
            raise OptionError("--diversity compares the batch's items, not several crops of each: use --crops 1")
        if batch < 2:
            raise OptionError("--diversity needs --batch 2 or more: it pushes the batch's images apart")
        objective = objective + diversity * _diversity_term(model, objective)
    structure, numbers, masks = resolve(model, objective, batch, T.output_size(chain, height, width))
    mode = resolve_precision(precision)
    stats = stats if stats is not None else RunStats()
    program = Program("render_steps", model, (structure, image_param, chain, float(lr), mode, bool(redirect), crops),
                      lambda: render_steps(model, structure, image_param, chain, float(lr), mode, bool(redirect),
                                           crops), options=STEPS_OPTIONS.get(jax.default_backend(), ()))
    item_seeds = np.arange(batch, dtype=np.uint32) if item_seeds is None else np.asarray(item_seeds, np.uint32)
    if item_seeds.shape != (batch,):
        raise OptionError(f"item_seeds must hold one seed per item: {batch}, got shape {item_seeds.shape}")
    cache = program_cache()
    # Through the cache (kept on disk): drawn eagerly, the first draw and the last images cost ~2 s a run.
    starting = Program("render_init", None, image_param,
                       lambda: lambda s, items: image_param.init(item_keys(s, items)))
    theta = cache(starting, np.uint32(seed), item_seeds, stats=stats) if init is None else \
        jnp.broadcast_to(image_param.from_image(_checked_init(init, height, width)), (batch, *image_param.shape))
    theta = jnp.asarray(theta) if (sharding := batch_sharding(batch)) is None else jax.device_put(theta, sharding)
    state = (theta, optax.adam(lr).init(theta), jnp.zeros((batch, height, width), jnp.float32))
    params = placed_params(model, theta)

    def chunk(state: Any, start: int, stop: int) -> Any:
        return cache(program, params, *state, numbers, masks, np.uint32(seed), item_seeds, np.int32(start),
                     np.int32(stop), stats=stats)

    with progress.task("rendering", steps, "step"):
        theta, _, accumulated = run_in_chunks(chunk, state, steps)
    showing = Program("render_images", None, image_param, lambda: jax.vmap(image_param.to_image))
    images = np.asarray(cache(showing, theta, stats=stats))
    if not attribution:
        return images
    accumulated = np.asarray(accumulated)
    peaks = accumulated.max(axis=(1, 2), keepdims=True)
    return images, np.where(peaks > 0, accumulated / np.where(peaks > 0, peaks, 1), 0).astype(np.float32)


def render_steps(model: Model, structure: Structure, image_param: ImageParam, chain: tuple[T.Transform, ...],
                 lr: float, precision: str, redirect: bool = False, crops: int = 1) -> Any:
    """(params, theta, opt_state, attribution, numbers, masks, seed, item_seeds, start, stop) -> (theta, opt_state,
    attribution) after steps start .. stop - 1 of Adam on the objective; ``attribution`` (batch, H, W) adds each
    step's |gradient| with respect to the image, summed over colours."""
    optimiser = optax.adam(lr)
    layers = tuple(sorted({layer for _, layer, _, _ in structure if layer is not None}))
    uses_logits = any(kind in LOGIT_KINDS for kind, _, _, _ in structure)

    def gain(images: Array, params: Any, numbers: Any, masks: Array, keys: Array) -> Array:
        views = [jax.vmap(lambda k, image, c=c: T.apply(chain, k if crops == 1 else jax.random.fold_in(k, c),
                                                        image))(keys, images)
                 for c in range(crops)]  # crop c of every item (a single crop draws from the item's own key)
        seen = views[0] if crops == 1 else jnp.concatenate(views)
        masks = masks if crops == 1 else jnp.tile(masks, (1, crops)) / crops
        with redirected_relus(redirect):  # read while tracing: the program holds one kind of ReLU
            acts = model.apply(params, model.normalize(seen), layers, precision) if layers else {}
            logits = network_logits(model, params, seen, precision) if uses_logits else None
        return objective_total(structure, acts, logits, numbers, masks)

    def run(params: Any, theta: Array, opt_state: Any, attribution: Array, numbers: Any, masks: Array, seed: Array,
            item_seeds: Array, start: Array, stop: Array) -> tuple[Array, Any, Array]:
        keys = item_keys(seed, item_seeds)

        def step(i: Array, carry: tuple[Array, Any, Array]) -> tuple[Array, Any, Array]:
            theta, opt_state, attribution = carry
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(keys)  # 0 drew the init
            images, back = jax.vjp(jax.vmap(image_param.to_image), theta)
            # The gradient of what is ascended (a redirected ReLU's rule reads its sign), negated for optax.
            image_grads = jax.grad(gain)(images, params, numbers, masks, step_keys)
            grads = -back(image_grads)[0]
            updates, opt_state = optimiser.update(grads, opt_state, theta)
            attribution = attribution + jnp.sum(jnp.abs(image_grads), axis=-1)
            return optax.apply_updates(theta, updates), opt_state, attribution

        return jax.lax.fori_loop(start, stop, step, (theta, opt_state, attribution))

    return run


def evaluate(model: Model, objective: Objective | str, images: Any, precision: str | None = None) -> np.ndarray:
    """The objective's value for each image (N, H, W, 3) as the network sees it, untransformed: (N,)."""
    objective = parse_objective(objective) if isinstance(objective, str) else objective
    images = jnp.asarray(images, jnp.float32)
    structure, numbers, masks = resolve(model, objective, images.shape[0], images.shape[1:3])
    mode = resolve_precision(precision)
    layers = tuple(sorted({layer for _, layer, _, _ in structure if layer is not None}))
    acts = model.apply(model.params, model.normalize(images), layers, mode) if layers else {}
    logits = network_logits(model, model.params, images, mode) if any(k in LOGIT_KINDS for k, *_ in structure) \
        else None
    per_item = [objective_total(structure, acts, logits, numbers, masks * np.eye(images.shape[0])[i])
                for i in range(images.shape[0])]
    return np.asarray(per_item, np.float32)


def network_logits(model: Model, params: Any, views: Array, precision: str) -> Array:
    """The logits a class objective reads: the network on the views as they are where it takes their size (lucid's
    and lucent's convention, and how layer objectives read the network here), else on the views squashed to its
    input size as a photo would be. Squashing a 236 px view to 224 cost SqueezeNet's pictures transferability
    (benchmarks/NOTES.md: 0.41 -> 0.50 top-1 under the other two classifiers)."""
    try:
        shape = jax.eval_shape(lambda p, x: model.apply_logits(p, x, precision, resize=False), params, views).shape
    except Exception:  # a head built for its own size (Flatten, then Dense) fails in its own way
        shape = None
    return model.apply_logits(params, views, precision, resize=shape != (views.shape[0], model.num_classes))


def item_keys(seed: Any, item_seeds: Any) -> Array:
    """One key per item, from the run's seed and the item's own seed."""
    base = jax.random.key(seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(item_seeds, jnp.uint32))


def batch_sharding(batch: int) -> NamedSharding | None:
    """The batch split over the local devices where there are several and they divide it."""
    devices = jax.local_devices()
    if len(devices) < 2 or batch % len(devices):
        return None
    return NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))


def objective_total(structure: Structure, acts: dict[int, Array], logits: Array | None, numbers: Any,
                    masks: Array) -> Array:
    """The objective summed over the batch: each term's per-item value times its weight and its item mask (a
    diversity term is one value for the whole batch)."""
    total = jnp.float32(0)
    for t, (kind, layer, _, _) in enumerate(structure):
        number = numbers[t]
        if kind == "diversity":
            total = total + number["weight"] * diversity_value(acts[layer])
            continue
        if kind == "class_logit":
            values = jnp.take(logits, number["index"], axis=-1)
        elif kind == "class_bce":
            values = jax.vmap(class_objective, in_axes=(0, None))(logits, number["vector"])
        else:
            values = jax.vmap(lambda a, n=number, k=kind: term_value(k, a, n))(acts[layer])
        total = total + number["weight"] * jnp.sum(masks[t] * values)
    return total


def resolve(model: Model, objective: Objective, batch: int, seen: tuple[int, int] | None = None
            ) -> tuple[Structure, list[dict[str, Any]], np.ndarray]:
    """The objective against ``model``, a batch size and the size the network sees (``seen``, after the
    transforms; the model's own size if None): (structure: what decides the program, numbers: each term's
    arguments, masks (terms, batch): which items each term is for). One clear error for a layer, channel, class,
    position or item that does not exist."""
    structure, numbers, masks = [], [], []
    seen = seen or model.input_size
    for term in objective.terms:
        if term.batch is not None and not 0 <= term.batch < batch:
            raise OptionError(f"an objective for item {term.batch} of a batch of {batch}")
        if term.kind == "diversity" and batch < 2:
            raise OptionError("a diversity term needs a batch of 2 or more: it pushes the batch's images apart")
        mask = np.ones(batch, np.float32) if term.batch is None else np.eye(batch, dtype=np.float32)[term.batch]
        number: dict[str, Any] = {"weight": np.float32(term.weight)}
        layer = None
        if term.kind in LOGIT_KINDS:
            labels = model.class_names()
            if term.kind == "class_logit":
                number["index"] = np.int32(next(iter(parse_classes(term.index if isinstance(term.index, int) else
                                                                   str(term.index), labels))))
            else:
                number["vector"] = target_vector(parse_classes(term.vector, labels), len(labels), TARGET_SCALE)
        else:
            layer = model.resolve_layer(term.layer)
            model.check_layer(layer)
            out_h, out_w, channels = model.layer_output_shapes(*seen, layer)[-1]
            if term.kind in ("channel", "neuron"):
                if not 0 <= int(term.index) < channels:
                    raise OptionError(f"channel {term.index} is out of range: layer {layer} has channels 0 .. "
                                      f"{channels - 1}")
                number["index"] = np.int32(term.index)
            if term.at is not None:
                if not (0 <= term.at[0] < out_w and 0 <= term.at[1] < out_h):
                    raise OptionError(f"neuron position x={term.at[0]}, y={term.at[1]} is outside layer {layer}'s "
                                      f"{out_w}x{out_h} output (for the {seen[1]}x{seen[0]} image the network sees "
                                      "after the transforms)")
                number["x"], number["y"] = np.int32(term.at[0]), np.int32(term.at[1])
            if term.kind == "feature_l2":
                if tuple(term.vector.shape) != (out_h, out_w, channels):
                    raise OptionError(f"the features {tuple(term.vector.shape)} are not layer {layer}'s output "
                                      f"{(out_h, out_w, channels)} for the {seen[1]}x{seen[0]} image the network sees")
                number["vector"] = np.asarray(term.vector, np.float32)
            if term.kind in ("direction", "direction_cos"):
                if len(term.vector) != channels:
                    raise OptionError(f"the direction has {len(term.vector)} values; layer {layer} has {channels} "
                                      "channels")
                number["vector"] = np.asarray(term.vector, np.float32)
        length = None if "vector" not in number else np.shape(number["vector"])
        structure.append((term.kind, layer, term.at is not None, length))
        numbers.append(number)
        masks.append(mask)
    if not structure:
        raise OptionError("the objective has no terms")
    return tuple(structure), numbers, np.stack(masks)


def _diversity_term(model: Model, objective: Objective) -> Objective:
    """Diversity at the objective's deepest layer (the layer before the logits for class objectives)."""
    layers = [model.resolve_layer(t.layer) for t in objective.terms if t.layer is not None]
    return diversity(max(layers) if layers else model.logits_layer - 1)


def _checked_init(image: Any, height: int, width: int) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if image.shape != (height, width, 3):
        raise OptionError(f"the start image is {image.shape}; render at its size (--size {image.shape[1]}x"
                          f"{image.shape[0]}) or resize it")
    return image


__all__ = ["Term", "batch_sharding", "evaluate", "item_keys", "objective_total", "render", "render_steps", "resolve"]
