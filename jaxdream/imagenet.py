"""ImageNet-1k classes across label orders, so that a class means the same thing under every model.

Darknet numbers the classes in its own order (the first 1000 lines of ``imagenet.labels.list``); Keras, PyTorch
and most ONNX exports number them by sorted WordNet id. Both orders are lists of the same 1000 WordNet ids (the
sorted Darknet list equals Keras' ``imagenet_class_index.json``, checked by the tests), so every class index of
either order maps to its id exactly.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from jaxdream.errors import OptionError
from jaxdream.weights import DARKNET_1K_NAMES, DARKNET_1K_WNIDS, KERAS_1K_NAMES, labels_text

if TYPE_CHECKING:
    from jaxdream.protocol import Model

DARKNET, WORDNET = "darknet", "wordnet-sorted"
CLASSES = 1000
MIN_MATCHES = 900  # names that must agree, position by position, with one order's list to call it that order


@functools.cache
def order_wnids(order: str) -> tuple[str, ...]:
    """The WordNet id of each class index in ``order``."""
    darknet = tuple(labels_text(DARKNET_1K_WNIDS).split())
    return darknet if order == DARKNET else tuple(sorted(darknet))


@functools.cache
def _order_names(order: str) -> tuple[str, ...]:
    text = labels_text(DARKNET_1K_NAMES if order == DARKNET else KERAS_1K_NAMES)
    return tuple(_plain(name) for name in text.splitlines())


def _plain(name: str) -> str:
    """A class name as the lists compare them: 'great_white_shark' = 'great white shark, white shark, ...'."""
    return name.split(",")[0].replace("_", " ").strip().lower()


def class_order(model: Model) -> str:
    """Which order a 1000-class model numbers its classes in, told by its class names (names that are only indices:
    Darknet's order for a Darknet network, else the sorted WordNet order, the common convention)."""
    try:
        count = model.num_classes
    except Exception as err:
        raise OptionError(f"{model.name} is not a classifier ({err})") from None
    if count != CLASSES:
        raise OptionError(f"{model.name} has {count} classes; this compares ImageNet-1k classifiers (1000 classes)")
    names = model.class_names()
    if all(name.isdigit() for name in names):  # no labels: the backend's own convention
        return DARKNET if type(model).__module__.startswith("jaxdream.darknet") else WORDNET
    plain = [_plain(name) for name in names]
    scores = {order: sum(a == b for a, b in zip(plain, _order_names(order), strict=True))
              for order in (DARKNET, WORDNET)}
    best = max(scores, key=lambda order: scores[order])
    if scores[best] < MIN_MATCHES:
        raise OptionError(f"{model.name}: its class names follow neither Darknet's ImageNet order nor the sorted "
                          f"WordNet order ({scores[best]} of 1000 in place at best); load it with the labels of one "
                          "of them (--labels)")
    return best


def model_wnids(model: Model) -> tuple[str, ...]:
    """The WordNet id of each of ``model``'s class indices."""
    return order_wnids(class_order(model))


def class_index(model: Model, wnid: str) -> int:
    """``model``'s index of the class with WordNet id ``wnid``."""
    wnids = model_wnids(model)
    if wnid not in wnids:
        raise OptionError(f"{wnid!r} is not an ImageNet-1k WordNet id (such as n01518878, ostrich)")
    return wnids.index(wnid)


def wnid_named(text: str) -> str | None:
    """The WordNet id a text names: an id itself, or a class name of either order ('ostrich', 'kit_fox')."""
    if text in order_wnids(DARKNET):
        return text
    for order in (DARKNET, WORDNET):
        names = _order_names(order)
        found = [order_wnids(order)[i] for i, name in enumerate(names) if name == _plain(text)]
        if len(found) > 1:  # 'crane' (the bird, the machine), 'maillot'
            raise OptionError(f"{text!r} names {len(found)} ImageNet classes ({', '.join(found)}): use the WordNet id")
        if found:
            return found[0]
    return None


def target(model: Model, index: int) -> dict[str, Any]:
    """A class target as manifests record it: the model's index and name, and its WordNet id where the model is
    an ImageNet-1k classifier in a known order (else None)."""
    try:
        wnid: str | None = model_wnids(model)[index]
    except OptionError:
        wnid = None
    return {"class": int(index), "name": model.class_names()[index], "wnid": wnid}
