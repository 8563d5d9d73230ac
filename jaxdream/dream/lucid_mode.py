"""Class-targeted ("lucid") dreaming: ascend -BCE-with-logits toward a scaled one-hot (or mixed) target.

The published recipe: run the whole classifier, set the chosen classes' targets to ``target_scale`` (100), the
rest to 0, and take gradient steps that lower the binary cross-entropy of the logits, i.e. ascent on its negative.
The loop is the nightmare engine's compiled round, with this objective in place of the thresholded L2.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdream import checks
from jaxdream.compiled.placement import as_batch
from jaxdream.compiled.stats import RunStats
from jaxdream.dream import core, engine
from jaxdream.dream.validate import check_round_options
from jaxdream.errors import OptionError

if TYPE_CHECKING:
    from jaxdream.protocol import Model

MIX_SETTLE = 0.5  # share of a mixed dream's iterations drawn without jitter (objectives.class_mix_objective)
ClassSpec = str | int | Mapping[str | int, float]


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _class_index(token: str | int, labels: tuple[str, ...]) -> int:
    if isinstance(token, int) or (isinstance(token, str) and token.strip().lstrip("-").isdigit()):
        index = int(token)
        if not 0 <= index < len(labels):
            raise OptionError(f"class index {index} is out of range: the model has classes 0 .. {len(labels) - 1}")
        return index
    wanted = _normal(str(token))
    if not wanted:
        raise OptionError("an empty class name; give a name such as 'ostrich' or an index such as 9")
    matches = [i for i, label in enumerate(labels) if _normal(label) == wanted] or [
        i for i, label in enumerate(labels) if wanted in (_normal(part) for part in label.split(","))
    ]  # label files often list synonyms: 'ostrich, Struthio camelus'

    if len(matches) == 1:
        return matches[0]
    if matches:
        options = ", ".join(f"{i} ({labels[i]})" for i in matches)
        raise OptionError(f"class {token!r} is ambiguous: {options}; give the index instead")
    close = difflib.get_close_matches(wanted, [_normal(label) for label in labels], n=5, cutoff=0.6)
    hint = ", ".join(f"{labels.index(next(lb for lb in labels if _normal(lb) == c))} ({c})" for c in close)
    advice = f"; closest: {hint}" if hint else "; `jaxdream classify --top 1000` lists the names"
    raise OptionError(f"unknown class {token!r}{advice}")


def parse_classes(spec: ClassSpec, labels: tuple[str, ...]) -> dict[int, float]:
    """'ostrich', 9, 'ostrich:0.7,pelican:0.3' or {'ostrich': 1.0} -> {class index: weight}."""
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, int):
        items = [(spec, 1.0)]
    else:
        items = []
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            name, sep, weight = part.rpartition(":") if re.search(r":\s*[\d.eE+-]+$", part) else (part, "", "")
            try:
                items.append((name if sep else part, float(weight) if sep else 1.0))
            except ValueError:
                raise OptionError(f"class weight in {part!r} is not a number") from None
    if not items:
        raise OptionError("no class given: use e.g. --class ostrich, --class 9 or --class 'ostrich:0.7,pelican:0.3'")
    classes: dict[int, float] = {}
    for token, weight in items:
        if not np.isfinite(weight) or weight <= 0:
            raise OptionError(f"class weight {weight} for {token!r} must be a positive number")
        index = _class_index(token, labels)
        classes[index] = classes.get(index, 0.0) + float(weight)
    if not np.isfinite(sum(classes.values())):
        raise OptionError("class weights are too large: their sum is not a finite number; use shares such as 0.7,0.3")
    return classes


def class_tag(spec: ClassSpec) -> str:
    """The classes of a spec as output names carry them: 'ostrich:0.7,great white shark' ->
    'ostrich-great_white_shark'."""
    if isinstance(spec, Mapping):
        parts = [str(k) for k in spec]
    else:
        parts = [p.rpartition(":")[0] if re.search(r":\s*[\d.eE+-]+$", p) else p for p in str(spec).split(",")]
    return "-".join(re.sub(r"[^\w.-]+", "_", p.strip()) for p in parts if p.strip())


def output_tag(spec: ClassSpec) -> str:
    """What a lucid dream's output names carry after the model: the mode and its classes ('class-ostrich'), so they
    never meet a nightmare's layer names ('9')."""
    return f"class-{class_tag(spec)}"


def target_vector(classes: Mapping[int, float], num_classes: int, target_scale: float) -> np.ndarray:
    """Scaled target: ``target_scale`` times each class's share of the weights; 0 elsewhere."""
    total = sum(classes.values())
    target = np.zeros(num_classes, np.float32)
    for index, weight in classes.items():
        target[index] = target_scale * weight / total
    return target


def lucid(
    model: Model, x: Any, classes: ClassSpec, iters: int = 40, rate: float = 0.02, target_scale: float = 100.0,
    octaves: int = 1, jitter: bool = True, rounds: int = 1, zoom: float = 1.0, rotate: float = 0.0, seed: int = 0,
    on_round: Callable[[int, np.ndarray], None] | None = None, stats: RunStats | None = None,
    precision: str | None = None, keep_rounds: bool = True,
) -> np.ndarray:
    """Dream images (H, W, 3) or (N, H, W, 3) toward ``classes`` -> (rounds, N, H, W, 3) (``keep_rounds`` False:
    only the last round, as in ``nightmare``)."""
    images = as_batch(x, images=True)
    labels = model.class_names()
    chosen = parse_classes(classes, labels)
    checks.check_number("target-scale", target_scale, 0.0, strict=True)
    target = target_vector(chosen, len(labels), target_scale)
    if not np.isfinite(target).all():
        raise OptionError(f"--target-scale {target_scale} is too large for float32 targets")
    check_round_options(rate, rounds, zoom, rotate)
    mixed = len(chosen) > 1
    # BCE pushes every other class toward 0; where the logits pass a ReLU (SqueezeNet) they sit far above 0 and
    # those pushes drown the chosen class (measured: ostrich fell from 10.3 to 1.2), so the softmax likelihood
    # of the chosen share serves instead (ostrich at 100 %).
    likelihood = mixed or model.nonnegative_logits
    config = core.DreamConfig(layer=model.logits_layer, iters=iters, octaves=octaves, jitter=jitter,
                              objective="class_mix" if likelihood else "class", gray_pull=0.0, anneal=mixed,
                              settle=MIX_SETTLE if mixed else 0.0, precision=precision)
    run = engine.Run(rate=rate, aux=target, rounds=rounds, zoom=zoom, rotate=rotate, seed=seed, on_round=on_round,
                     stats=stats if stats is not None else RunStats(), keep_rounds=keep_rounds)
    return engine.dream(model, images, config, run)


def top_classes(model: Model, x: Any, top: int = 5) -> list[list[dict[str, Any]]]:
    """Per image, the ``top`` classes (at most the class count) as {"index", "name", "prob"}, highest first."""
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise OptionError(f"--top {top!r}: show at least 1 class (a whole number >= 1)")
    probs = np.asarray(model.predict(x))
    names = model.class_names()
    order = np.argsort(-probs, axis=1)[:, :top]
    return [
        [{"index": int(i), "name": names[i], "prob": float(p[i])} for i in row]
        for p, row in zip(probs, order, strict=True)
    ]


def lucid_each(
    model: Model, images: Sequence[Any], classes: ClassSpec, top: int = 3,
    on_round: Callable[[int, int, np.ndarray], None] | None = None, **options: Any,
) -> list[list[dict[str, Any]]]:
    """Dream each image (they may differ in size) toward ``classes`` with ``lucid(**options)``, one after another;
    ``on_round(image index, round, frames)`` after each round. The classes are checked before any work. Returns,
    per image, the ``top`` classes the model sees in its last round."""
    parse_classes(classes, model.class_names())
    seen = []
    for i, image in enumerate(images):
        each = None if on_round is None else (lambda r, frames, i=i: on_round(i, r, frames))
        result = lucid(model, image, classes, on_round=each, keep_rounds=False, **options)
        seen.append(top_classes(model, result[-1], top)[0])
    return seen
