"""The model protocol every backend (Darknet, Keras, ONNX) meets, and the checks every backend's parameters pass.

A backend is a package with the same shape: it parses its architecture, builds the pure network function, loads
and checks parameters against the tree that network expects, and says how images are preprocessed and what the
classes are called. Callers see only :class:`Model`.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxdream.compiled.cache import Program, program_cache
from jaxdream.compiled.placement import as_batch, placed_params
from jaxdream.errors import NumericError, OptionError, WeightsError
from jaxdream.ops import check_precision, default_precision

if TYPE_CHECKING:
    from jaxdream import converted

Params = Any  # a tree of dicts whose leaves are float32 arrays, in the backend's own layout
Shape = tuple[int, ...]


def flat_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """{'layer/name': leaf} for a tree of dicts (a flat dict is returned as it is)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{name}": leaf for name, leaf in flat_params(value).items()})
        else:
            flat[str(key)] = value
    return flat


def check_params(expected: Mapping[str, Shape], params: Mapping[str, Any], source: str, target: str) -> None:
    """Every parameter ``target`` expects, with its shape, and nothing else: the missing, unexpected and
    mis-shaped entries named in one error (vit_jax's ``inspect_params`` pattern)."""
    have = flat_params(params)
    problems = [f"missing {name}" for name in sorted(set(expected) - set(have))]
    problems += [f"unexpected {name}" for name in sorted(set(have) - set(expected))]
    problems += [f"{name} has shape {tuple(np.shape(have[name]))}, the architecture needs {tuple(shape)}"
                 for name, shape in sorted(expected.items())
                 if name in have and tuple(np.shape(have[name])) != tuple(shape)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise WeightsError(f"{source}: parameters do not fit {target}: {shown}")


def check_finite(params: Any, source: str) -> None:
    """One clear error for the first parameter with NaN or infinite values (a damaged or hand-edited file)."""
    for where, array in flat_params(params).items():
        if not np.isfinite(np.asarray(array)).all():
            raise WeightsError(f"{source}: parameter {where} has NaN or infinite values; the file is damaged")


class Model(ABC):
    """A loaded network (any backend): the forward/classify API of DESIGN.md on top of the backend's pure
    ``apply``/``apply_logits``. Layer indices count from 0; images are float32 NHWC in [0, 1]."""

    name: str
    params: Params
    labels: tuple[str, ...] | None

    # What each backend provides.
    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(height, width) the network was defined for."""

    @property
    @abstractmethod
    def logits_layer(self) -> int:
        """The layer whose output is the classifier's logits (the input of its final softmax)."""

    @property
    @abstractmethod
    def num_classes(self) -> int: ...

    @abstractmethod
    def check_layer(self, layer: int, what: str = "layer") -> Any:
        """The spec of a layer a dream may target; one clear error for a bad index."""

    @abstractmethod
    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        """Output (h, w, c) of layers 0 .. upto for an input of height x width; JaxdreamError if one is empty."""

    @abstractmethod
    def describe(self, height: int | None = None, width: int | None = None) -> list[dict[str, Any]]:
        """The layer table: index, type, output (h, w, c), params (and name or cfg line where the backend has one)."""

    @abstractmethod
    def preprocess(self, x: jax.Array) -> jax.Array:
        """Images (N, H, W, 3) in [0, 1] -> the classifier's input (size and values); differentiable."""

    @property
    @abstractmethod
    def input_note(self) -> str:
        """How ``preprocess`` brings a photo to the network, in words (``weights info``)."""

    @abstractmethod
    def param_shapes(self) -> dict[str, Shape]:
        """{'layer/name': shape} of every parameter the network expects (what loaded parameters are checked
        against)."""

    @abstractmethod
    def params_from_flat(self, flat: Mapping[str, Any]) -> Params:
        """The backend's parameter tree from {'layer/name': leaf} (the inverse of :func:`flat_params`)."""

    @abstractmethod
    def apply(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32"
              ) -> dict[int, jax.Array]:
        """Pure forward of network inputs: the function the compiled dream loop differentiates."""

    @abstractmethod
    def apply_logits(self, params: Params, x: jax.Array, precision: str = "f32", resize: bool = True) -> jax.Array:
        """Pure: (N, H, W, 3) images in [0, 1] -> (N, classes) logits, preprocessing included; ``resize=False``
        leaves the size alone (only the value mapping, ``normalize``), for a network that takes any size."""

    @abstractmethod
    def to_converted(self, source_sha256: str) -> converted.Converted:
        """jaxdream's one-file form of this model (kind, architecture text, parameters, labels)."""

    # What backends may refine.
    def normalize(self, x: jax.Array) -> jax.Array:
        """The network's value mapping of [0, 1] images (Darknet: none); sizes are left alone."""
        return x

    def network_input(self, x: jax.Array, resize: bool = True) -> jax.Array:
        """What ``apply_logits`` feeds the network: ``preprocess`` (size and values), or with ``resize=False``
        only the values (``normalize``)."""
        return self.preprocess(x) if resize else self.normalize(x)

    def canvas_ready(self, upto: int) -> bool:
        """Whether layers 0 .. upto can run on a canvas (``apply_on_canvas``): images of several sizes in one
        program, each with the values of a network of its own size."""
        return False

    def apply_on_canvas(self, params: Params, x: jax.Array, layers: tuple[int, ...], valid: jax.Array,
                        precision: str = "f32") -> dict[int, jax.Array]:
        """``apply`` on canvases (N, H, W, 3), each image in the top-left corner: ``valid`` (N, 1 + layers, 2) is
        each image's true (h, w) at the input and at every layer's output up to the deepest requested."""
        raise OptionError(f"{self.name}: this kind of model does not run on a canvas (canvas_ready is False)")

    @property
    def nonnegative_logits(self) -> bool:
        """Whether the logits pass a ReLU (no class can be pushed below 0, so BCE toward 0 cannot balance)."""
        return False

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Each layer's name, in index order (Keras layer names, ONNX node outputs); empty where layers have none."""
        return ()

    def resolve_layer(self, layer: int | str) -> int:
        """A layer index from an index, its text ('10', '-1') or the layer's name (digits are always an index)."""
        key = layer_key(layer)
        if isinstance(key, int):
            return key
        text = key
        if text in self.layer_names:
            return self.layer_names.index(text)
        named = "by index or name" if self.layer_names else "by index"
        raise OptionError(f"{self.name} has no layer {layer!r}; its layers are chosen {named} "
                          "(`jaxdream weights info` lists them)")

    # What every model shares.
    def checked(self, source: str) -> Model:
        """This model, once its parameters fit the network's expected tree and are all finite."""
        check_params(self.param_shapes(), self.params, source, f"{self.name}'s architecture")
        check_finite(self.params, source)
        return self

    @functools.cached_property
    def weights_digest(self) -> str:
        """sha256 of every parameter's name, shape and bytes."""
        digest = hashlib.sha256()
        for path, array in sorted(flat_params(self.params).items()):
            array = np.ascontiguousarray(np.asarray(array, np.float32))
            digest.update(f"{path}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the kind and architecture (not the parameters): what compiled programs depend on."""
        stored = self.to_converted("")
        return hashlib.sha256(f"{stored.kind}\n{stored.architecture}".encode()).hexdigest()

    def forward(self, x: Any, layers: tuple[int, ...] | int = (-1,), precision: str | None = None
                ) -> dict[int, jax.Array]:
        """Activations (NHWC) of the requested layers for float32 NHWC images in [0, 1]."""
        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        layers = tuple(self.num_layers + i if i < 0 else i for i in layers)
        for layer in layers:
            self.check_layer(layer)
        mode = check_precision(precision) if precision else default_precision()
        images = as_batch(x)
        program = Program("forward", self, (layers, mode),
                          lambda: lambda params, x: self.apply(params, self.normalize(x), layers, mode))
        return program_cache()(program, placed_params(self, images), images)

    def logits(self, x: Any, precision: str | None = None) -> jax.Array:
        """(N, classes): the input of the final softmax, for images of any size in [0, 1]."""
        self.num_classes  # noqa: B018 - raises for a network that is not a classifier
        mode = check_precision(precision) if precision else default_precision()
        images = as_batch(x)
        program = Program("logits", self, mode, lambda: lambda params, x: self.apply_logits(params, x, mode))
        return program_cache()(program, placed_params(self, images), images)

    def predict(self, x: Any, precision: str | None = None) -> np.ndarray:
        """(N, classes) class probabilities; logits with NaN or infinite values (overflowing weights) are refused,
        as every non-finite result is, rather than returned as NaN probabilities."""
        z = np.asarray(self.logits(x, precision), np.float64)
        if not np.isfinite(z).all():
            raise NumericError(f"{self.name}: the class probabilities have NaN or infinite values: the network "
                               "overflows on this input; check the weights file (a damaged or hand-edited value?)")
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)

    def class_names(self) -> tuple[str, ...]:
        """The labels, or the class indices as text when the model carries none."""
        return self.labels if self.labels is not None else tuple(str(i) for i in range(self.num_classes))


def layer_key(layer: int | str) -> int | str:
    """A layer as the user gave it: digits ('10', '-1') are always an index; anything else is a layer's name."""
    text = str(layer).strip()
    return int(text) if text.lstrip("-").isdigit() else text
