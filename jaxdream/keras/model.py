"""Keras HDF5 models as jaxdream models: a full model file (``model_config`` + ``model_weights``) or a weights-only
file paired with a built-in architecture, with Keras' preprocessing ('caffe' for VGG, 'tf' otherwise) and the
Keras ImageNet names for 1000-class heads. Only linear chains of layers (VGG16/19, MobileNet v1 and the like).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxdream import converted
from jaxdream import weights as builtin
from jaxdream.errors import JaxdreamError, OptionError, WeightsError
from jaxdream.files import check_user_file
from jaxdream.image import ecosystem_resize, ecosystem_resize_note
from jaxdream.keras.layers import (
    KERAS_ARCHITECTURES,
    KLayer,
    full_model_layers,
    input_hw_of,
    keras_architecture,
    nonempty,
)
from jaxdream.keras.network import KerasNetwork
from jaxdream.keras.weights import layer_names, read_weight_groups, reading
from jaxdream.protocol import Model, Params, Shape

Array = jax.Array
VGG_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True, eq=False)
class KerasModel(Model):
    """A Keras network ready to run: ``params`` maps 'layer/weight' to arrays in Keras' own layouts."""

    name: str
    layers: tuple[KLayer, ...]
    params: Params
    input_hw: tuple[int, int]
    preprocessing: str  # 'caffe' (VGG: BGR, mean subtracted, 0-255) or 'tf' (x / 127.5 - 1)
    labels: tuple[str, ...] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_hw

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def is_classifier(self) -> bool:
        last = self.layers[-1]
        return last.activation == "softmax" and last.kind in ("Activation", "Dense", "Conv2D")

    @functools.cached_property  # read per unit by an atlas: tracing the network each time cost ~50 ms
    def num_classes(self) -> int:
        if not self.is_classifier:
            raise OptionError(f"{self.name} is not a classifier: it does not end in a softmax (a no-top file?)")
        probe = jax.ShapeDtypeStruct((1, *self.input_hw, 3), jnp.float32)
        return int(jax.eval_shape(self.apply_logits, self.params, probe).shape[-1])

    @property
    def logits_layer(self) -> int:
        return self.num_layers - 1

    def check_layer(self, layer: int, what: str = "layer") -> KLayer:
        if not 0 <= layer < self.num_layers:
            raise OptionError(f"{what} {layer} is out of range: {self.name} has layers 0 .. {self.num_layers - 1}")
        return self.layers[layer]

    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        try:
            out = jax.eval_shape(lambda x: self.apply(self.params, x, tuple(range(upto + 1))),
                                 jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32))
        except (TypeError, ValueError) as err:
            raise JaxdreamError(f"{self.name}: a {width}x{height} input does not fit ({err})") from None
        shapes = [tuple(int(d) for d in out[i].shape[1:]) for i in range(upto + 1)]
        if any(min(s) < 1 for s in shapes):
            raise JaxdreamError(f"{self.name}: a {width}x{height} input leaves a layer empty")
        return [(1,) * (3 - len(s)) + s for s in shapes]  # flat outputs shown as 1 x 1 x n

    def preprocess(self, x: Array) -> Array:
        """Keras' preprocessing: an antialiased squash to the input size, then 'caffe' or 'tf' value mapping."""
        return self.normalize(ecosystem_resize(x, *self.input_hw, self.preprocessing))

    @property
    def input_note(self) -> str:
        return f"values: {self.preprocessing}; resize: {ecosystem_resize_note(self.preprocessing, *self.input_hw)}"

    def normalize(self, x: Array) -> Array:
        if self.preprocessing == "caffe":
            return x[..., ::-1] * 255.0 - jnp.asarray(VGG_BGR_MEAN, x.dtype)
        return x * 2.0 - 1.0

    def apply(self, params: Params, x: Array, layers: tuple[int, ...], precision: str = "f32") -> dict[int, Array]:
        return KerasNetwork(self.layers, precision).apply({"params": params}, x, layers)

    def apply_logits(self, params: Params, x: Array, precision: str = "f32", resize: bool = True) -> Array:
        return KerasNetwork(self.layers, precision).apply({"params": params}, self.network_input(x, resize),
                                                          logits=True)

    def param_shapes(self) -> dict[str, Shape]:
        probe = jax.ShapeDtypeStruct((1, *self.input_hw, 3), jnp.float32)
        network = KerasNetwork(self.layers)
        with reading(self.name):  # a hand-edited layer list may not even build
            tree = jax.eval_shape(lambda x: network.init(jax.random.key(0), x, tuple(range(self.num_layers))), probe)
        return {name: tuple(struct.shape) for name, struct in tree["params"].items()}

    def params_from_flat(self, flat: Mapping[str, Any]) -> Params:
        return dict(flat)

    def to_converted(self, source_sha256: str) -> converted.Converted:
        architecture = json.dumps({"input_hw": self.input_hw, "preprocessing": self.preprocessing,
                                   "input": self.input_note,
                                   "layers": [dataclasses.asdict(layer) for layer in self.layers]})
        return converted.Converted(self.name, architecture, self.params, source_sha256, self.labels, "keras")

    def describe(self, height: int | None = None, width: int | None = None) -> list[dict[str, Any]]:
        h, w = height or self.input_hw[0], width or self.input_hw[1]
        shapes = self.layer_output_shapes(h, w, self.num_layers - 1)
        counts = {name.split("/")[0]: 0 for name in self.params}
        for name, array in self.params.items():
            counts[name.split("/")[0]] += int(np.size(array))
        return [{"index": i, "type": layer.kind, "name": layer.name, "output": shapes[i],
                 "params": counts.get(layer.name, 0)} for i, layer in enumerate(self.layers)]


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_converted(stored: converted.Converted, source: str) -> KerasModel:
    """A Keras model from jaxdream's own .h5 (written by `jaxdream weights convert`)."""
    with reading(source):
        spec = json.loads(stored.architecture)
        layers = tuple(KLayer(**{k: _tuples(v) for k, v in layer.items()}) for layer in spec["layers"])
        if spec["preprocessing"] not in ("caffe", "tf"):
            raise ValueError(f"unknown preprocessing {spec['preprocessing']!r}")
        model = KerasModel(stored.name, nonempty(layers), dict(stored.params), input_hw_of(spec["input_hw"]),
                           spec["preprocessing"], stored.labels)
    return model.checked(source)


def _preprocessing_for(name: str) -> str:
    return "caffe" if "vgg" in name.lower() else "tf"


def build(name: str, layers: tuple[KLayer, ...], weights: dict[str, dict[str, np.ndarray]], input_hw: tuple[int, int],
          source: str) -> KerasModel:
    """A checked model from the file's arrays ({layer: {weight: array}}), with the ImageNet names for 1000 classes."""
    params = {f"{layer}/{weight}": array for layer, arrays in weights.items() for weight, array in arrays.items()}
    model = KerasModel(name, layers, params, input_hw, _preprocessing_for(name)).checked(source)
    if model.is_classifier and model.num_classes == 1000:
        labels = tuple(builtin.labels_text(builtin.KERAS_1K_NAMES).splitlines())
        model = KerasModel(name, layers, model.params, input_hw, model.preprocessing, labels)
    return model


def _architecture(architecture: str, names: list[str]) -> tuple[str, tuple[KLayer, ...], tuple[int, int]]:
    """A built-in Keras name, or a full model file whose layers are cut after the last one the weights name."""
    if architecture in KERAS_ARCHITECTURES:
        return architecture, *keras_architecture(architecture, include_top="fc1" in names)
    if Path(architecture).exists():
        check_user_file(architecture, "the architecture file", WeightsError)
    try:
        with h5py.File(architecture, "r") as f:
            name, layers, input_hw = full_model_layers(f, architecture)
    except OSError:
        keras_architecture(architecture)  # raises the list of known names
        raise
    last = max((i for i, layer in enumerate(layers) if layer.name in names), default=-1)
    return name, layers[: last + 1], input_hw


def load_keras(path: str | Path, architecture: str | None = None) -> KerasModel:
    """A full Keras model file, or a weights-only file with ``architecture``: a built-in Keras name (vgg-16, vgg-19)
    or the path of a full model file whose layers it fills (e.g. a no-top file with the full model)."""
    path, source = Path(path), str(path)
    check_user_file(path, "the Keras model file", WeightsError)
    with reading(source), h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        if "layer_names" not in group.attrs:
            raise WeightsError(f"{source}: an HDF5 file with no Keras layers (no layer_names attribute)")
        names = layer_names(group)
        if "model_config" in f.attrs and architecture is None:
            name, layers, input_hw = full_model_layers(f, source)
        elif architecture is None:
            raise WeightsError(
                f"{source}: a weights-only Keras file; pair it with an architecture: a built-in name "
                f"({', '.join(KERAS_ARCHITECTURES)}) or a full Keras model file"
            )
        else:
            name, layers, input_hw = _architecture(architecture, names)
        expected = KerasModel(name, layers, {}, input_hw, _preprocessing_for(name)).param_shapes()
        weights = read_weight_groups(group, names, expected, source, f"{name}'s architecture")
    with reading(source):
        return build(name, layers, weights, input_hw, source)


