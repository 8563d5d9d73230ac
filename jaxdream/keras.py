"""Keras HDF5 models: a full model file (``model_config`` + ``model_weights``) or a weights-only file paired with a
built-in architecture, run as a Flax module with Keras' own arithmetic (TF 'same' padding, BN epsilon inside
the root, channels-last flatten) and Keras' preprocessing.

Only linear chains of layers are supported (VGG16/19, MobileNet v1 and the like); layer indices count the layers
after the InputLayer, from 0, like Darknet's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxdream import converted
from jaxdream import weights as builtin
from jaxdream.errors import JaxdreamError, OptionError, WeightsError
from jaxdream.image import darknet_resize
from jaxdream.model import ModelBase, Params
from jaxdream.nn import conv, dense, max_pool

Array = jax.Array
SUPPORTED = (
    "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Activation", "ZeroPadding2D", "MaxPooling2D",
    "GlobalAveragePooling2D", "Flatten", "Dense", "Dropout", "Reshape",
)
ACTIVATIONS = {
    "linear": lambda x: x, "relu": jax.nn.relu, "relu6": lambda x: jnp.clip(x, 0, 6), "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh, "softmax": lambda x: jax.nn.softmax(x, axis=-1),
}
VGG_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class KLayer:
    """One Keras layer, typed: only the options the forward pass needs."""

    kind: str
    name: str
    filters: int = 0
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    use_bias: bool = True
    activation: str = "linear"
    depth_multiplier: int = 1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    zero_pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    keepdims: bool = False
    target_shape: tuple[int, ...] = ()
    units: int = 0

    def __post_init__(self) -> None:
        """Values a hand-edited file may get wrong, refused here instead of failing inside a trace."""
        if self.kind not in SUPPORTED:
            raise ValueError(f"layer {self.name!r}: unknown type {self.kind!r}")
        sizes = {"kernel size": self.kernel, "strides": self.strides, "target shape": self.target_shape or (1,),
                 "filters": (self.filters or 1,), "units": (self.units or 1,),
                 "depth multiplier": (self.depth_multiplier,)}
        for what, values in sizes.items():
            if not all(isinstance(v, int) and v >= 1 for v in values):
                raise ValueError(f"layer {self.name!r}: {what} {values} must be positive whole numbers")
        if self.padding not in ("valid", "same") or min(v for pair in self.zero_pad for v in pair) < 0:
            raise ValueError(f"layer {self.name!r}: padding {self.padding!r} / {self.zero_pad} is not valid")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"layer {self.name!r}: activation {self.activation!r}; supported: "
                             f"{', '.join(ACTIVATIONS)}")

    def param_names(self) -> tuple[str, ...]:
        if self.kind in ("Conv2D", "Dense"):
            return ("kernel", "bias") if self.use_bias else ("kernel",)
        if self.kind == "DepthwiseConv2D":
            return ("depthwise_kernel", "bias") if self.use_bias else ("depthwise_kernel",)
        if self.kind == "BatchNormalization":
            return (*(("gamma",) if self.scale else ()), *(("beta",) if self.center else ()), "moving_mean",
                    "moving_variance")
        return ()


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _zero_pad(value: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, int):
        return (value, value), (value, value)
    rows, cols = value
    return (_pair(rows) if not isinstance(rows, int) else (rows, rows)), \
        (_pair(cols) if not isinstance(cols, int) else (cols, cols))


def parse_layer(entry: dict[str, Any], source: str) -> KLayer | None:
    """A Keras layer config -> KLayer (None for the InputLayer); unsupported layers name themselves and the file."""
    kind, c = entry["class_name"], entry.get("config", {})
    name = c.get("name", entry.get("name", "?"))
    if kind == "InputLayer":
        return None
    if kind not in SUPPORTED:
        raise WeightsError(
            f"{source}: layer {name!r} is a {kind}, which jaxdream does not support; supported: {', '.join(SUPPORTED)}"
        )
    if tuple(_pair(c.get("dilation_rate", 1))) != (1, 1):
        raise WeightsError(f"{source}: layer {name!r} uses dilation, which jaxdream does not support")
    if c.get("data_format", "channels_last") not in (None, "channels_last"):
        raise WeightsError(f"{source}: layer {name!r} is {c['data_format']}; jaxdream reads channels_last models only "
                           "(re-save the model with data_format='channels_last')")
    activation = c.get("activation", "linear")
    if kind == "ReLU":
        activation = "relu"
    if activation not in ACTIVATIONS:
        raise WeightsError(
            f"{source}: layer {name!r} has activation {activation!r}; supported: {', '.join(ACTIVATIONS)}"
        )
    pool = c.get("pool_size", 2)
    return KLayer(
        kind, name, filters=int(c.get("filters", 0)),
        kernel=_pair(c.get("kernel_size", pool)), strides=_pair(c.get("strides") or pool),
        padding=c["padding"] if isinstance(c.get("padding"), str) else "valid",
        use_bias=bool(c.get("use_bias", True)), activation=activation,
        depth_multiplier=int(c.get("depth_multiplier", 1)), epsilon=float(c.get("epsilon", 1e-3)),
        center=bool(c.get("center", True)), scale=bool(c.get("scale", True)),
        max_value=None if c.get("max_value") is None else float(c["max_value"]),
        negative_slope=float(c.get("negative_slope", 0.0)), threshold=float(c.get("threshold", 0.0)),
        zero_pad=_zero_pad(c.get("padding", 0)) if kind == "ZeroPadding2D" else ((0, 0), (0, 0)),
        keepdims=bool(c.get("keepdims", False)), target_shape=tuple(c.get("target_shape", ())),
        units=int(c.get("units", 0)),
    )


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': out = ceil(size / stride), the odd pixel of padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(x: Array, kernel: Array, layer: KLayer, groups: int, precision: str) -> Array:
    if layer.padding == "same":
        pads = [_same_pads(x.shape[i], layer.kernel[i - 1], layer.strides[i - 1]) for i in (1, 2)]
    else:
        pads = [(0, 0), (0, 0)]
    return conv(x, kernel, layer.strides, pads, groups, precision)


class KerasNetwork(nn.Module):
    """The chain of layers; returns {index: activation}, or the logits (the final softmax's input)."""

    layers: tuple[KLayer, ...]
    precision: str = "f32"  # compute mode of every convolution and dense layer (nn.COMPUTE_MODES)

    def _layer(self, layer: KLayer, x: Array, strip_softmax: bool) -> Array:
        p = functools.partial(self.param, init_fn=nn.initializers.zeros)
        act = "linear" if strip_softmax and layer.activation == "softmax" else layer.activation
        if layer.kind == "Conv2D":
            kernel = p(f"{layer.name}/kernel", shape=(*layer.kernel, x.shape[-1], layer.filters))
            y = _conv(x, kernel, layer, 1, self.precision)
        elif layer.kind == "DepthwiseConv2D":
            c = x.shape[-1]
            kernel = p(f"{layer.name}/depthwise_kernel", shape=(*layer.kernel, c, layer.depth_multiplier))
            y = _conv(x, kernel.reshape(*layer.kernel, 1, c * layer.depth_multiplier), layer, c, self.precision)
        elif layer.kind == "Dense":
            kernel = p(f"{layer.name}/kernel", shape=(x.shape[-1], layer.units))
            y = dense(x, kernel, self.precision)
        elif layer.kind == "BatchNormalization":
            c = x.shape[-1]
            mean, var = p(f"{layer.name}/moving_mean", shape=(c,)), p(f"{layer.name}/moving_variance", shape=(c,))
            y = (x - mean) / jnp.sqrt(var + layer.epsilon)
            y = y * p(f"{layer.name}/gamma", shape=(c,)) if layer.scale else y
            return y + p(f"{layer.name}/beta", shape=(c,)) if layer.center else y
        elif layer.kind == "ReLU":
            y = jnp.where(x >= layer.threshold, x, layer.negative_slope * (x - layer.threshold))
            return y if layer.max_value is None else jnp.minimum(y, layer.max_value)
        elif layer.kind == "ZeroPadding2D":
            return jnp.pad(x, ((0, 0), *layer.zero_pad, (0, 0)))
        elif layer.kind == "MaxPooling2D":
            pads = [_same_pads(x.shape[i], layer.kernel[i - 1], layer.strides[i - 1]) for i in (1, 2)] \
                if layer.padding == "same" else [(0, 0), (0, 0)]
            return max_pool(x, layer.kernel, layer.strides, pads)
        elif layer.kind == "GlobalAveragePooling2D":
            return jnp.mean(x, axis=(1, 2), keepdims=layer.keepdims)
        elif layer.kind == "Flatten":
            return x.reshape(x.shape[0], -1)
        elif layer.kind == "Reshape":
            return x.reshape(x.shape[0], *layer.target_shape)
        elif layer.kind == "Dropout":
            return x
        else:  # Activation
            return ACTIVATIONS[act](x)
        if layer.use_bias:
            y = y + p(f"{layer.name}/bias", shape=(y.shape[-1],))
        return ACTIVATIONS[act](y)

    @nn.compact
    def __call__(self, x: Array, layers: tuple[int, ...] = (), logits: bool = False) -> Any:
        last = len(self.layers) - 1 if logits else max(layers)
        outputs = {}
        for i, layer in enumerate(self.layers[: last + 1]):
            if logits and i == last and layer.kind == "Activation" and layer.activation == "softmax":
                return x.reshape(x.shape[0], -1)
            x = self._layer(layer, x, strip_softmax=logits and i == last)
            outputs[i] = x
        return x.reshape(x.shape[0], -1) if logits else {i: outputs[i] for i in layers}


@dataclass(frozen=True, eq=False)
class KerasModel(ModelBase):
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
    def is_classifier(self) -> bool:
        last = self.layers[-1]
        return last.activation == "softmax" and last.kind in ("Activation", "Dense", "Conv2D")

    @property
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
        """Keras' preprocessing: squash to the input size, then 'caffe' or 'tf' value mapping."""
        return self.normalize(darknet_resize(x, *self.input_hw))

    def normalize(self, x: Array) -> Array:
        if self.preprocessing == "caffe":
            return x[..., ::-1] * 255.0 - jnp.asarray(VGG_BGR_MEAN, x.dtype)
        return x * 2.0 - 1.0

    def apply(self, params: Params, x: Array, layers: tuple[int, ...], precision: str = "f32") -> dict[int, Array]:
        return KerasNetwork(self.layers, precision).apply({"params": params}, x, layers)

    def apply_logits(self, params: Params, x: Array, precision: str = "f32") -> Array:
        return KerasNetwork(self.layers, precision).apply({"params": params}, self.preprocess(x), logits=True)

    def to_converted(self, source_sha256: str) -> converted.Converted:
        architecture = json.dumps({"input_hw": self.input_hw, "preprocessing": self.preprocessing,
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
    with _reading(source):
        spec = json.loads(stored.architecture)
        layers = tuple(KLayer(**{k: _tuples(v) for k, v in layer.items()}) for layer in spec["layers"])
        if spec["preprocessing"] not in ("caffe", "tf"):
            raise ValueError(f"unknown preprocessing {spec['preprocessing']!r}")
        model = KerasModel(stored.name, _nonempty(layers), stored.params, _input_hw(spec["input_hw"]),
                           spec["preprocessing"], stored.labels)
        _check_shapes(model, source)
    return model


@contextlib.contextmanager
def _reading(source: str) -> Iterator[None]:
    """Whatever a damaged or hand-edited file makes the reader trip over becomes one error naming the file."""
    try:
        yield
    except JaxdreamError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as err:
        raise WeightsError(f"{source}: not a Keras model jaxdream can read ({type(err).__name__}: {err})") from None


def _nonempty(layers: tuple[KLayer, ...]) -> tuple[KLayer, ...]:
    if not layers:
        raise ValueError("the model has no layers")
    return layers


def _input_hw(shape: Any) -> tuple[int, int]:
    """(height, width) from a Keras input shape (batch, h, w, c) or a stored (h, w); both positive."""
    hw = tuple(shape[1:3]) if len(shape) == 4 else tuple(shape)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ValueError(f"input shape {shape} needs a fixed positive height and width")
    return hw


def _read_weight_groups(group: h5py.Group, names: list[str], source: str) -> dict[str, dict[str, np.ndarray]]:
    weights: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        if name not in group:
            continue
        layer_group = group[name]
        arrays = {}
        for weight_name in layer_group.attrs.get("weight_names", []):
            weight_name = weight_name.decode() if isinstance(weight_name, bytes) else str(weight_name)
            arrays[weight_name.split("/")[-1].split(":")[0]] = np.asarray(layer_group[weight_name], np.float32)
        weights[name] = arrays
    return weights


def _attach(layers: tuple[KLayer, ...], weights: dict[str, dict[str, np.ndarray]], source: str) -> Params:
    """Params for each layer from the file's arrays; a missing, extra or mis-shaped array is a clear error."""
    params: Params = {}
    used = set()
    for layer in layers:
        arrays = weights.get(layer.name, {})
        for weight in layer.param_names():
            if weight not in arrays:
                raise WeightsError(f"{source}: layer {layer.name!r} needs weight {weight!r}, the file has none")
            params[f"{layer.name}/{weight}"] = arrays[weight]
        if layer.param_names():
            used.add(layer.name)
    extra = [name for name, arrays in weights.items() if arrays and name not in used]
    if extra:
        raise WeightsError(f"{source}: weights for layers the architecture does not have: {', '.join(extra[:5])}")
    return params


def _check_shapes(model: KerasModel, source: str) -> None:
    probe = np.zeros((1, *model.input_hw, 3), np.float32)
    network = KerasNetwork(model.layers)
    expected = jax.eval_shape(lambda: network.init(jax.random.key(0), probe, tuple(range(model.num_layers))))["params"]
    for name, want in expected.items():
        have = np.shape(model.params[name])
        if tuple(have) != tuple(want.shape):
            raise WeightsError(f"{source}: {name} has shape {tuple(have)}, the architecture needs {tuple(want.shape)}")


def is_keras_file(path: str | Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "layer_names" in f.attrs or "model_weights" in f
    except OSError:
        return False


def _preprocessing_for(name: str) -> str:
    return "caffe" if "vgg" in name.lower() else "tf"


def build(name: str, layers: tuple[KLayer, ...], weights: dict[str, dict[str, np.ndarray]], input_hw: tuple[int, int],
          source: str) -> KerasModel:
    model = KerasModel(name, layers, _attach(layers, weights, source), input_hw, _preprocessing_for(name))
    _check_shapes(model, source)
    if model.is_classifier and model.num_classes == 1000:
        labels = tuple(builtin.labels_text(builtin.KERAS_1K_NAMES).splitlines())
        model = KerasModel(name, layers, model.params, input_hw, model.preprocessing, labels)
    return model


def _names(group: h5py.Group) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]


def _full_model_layers(f: h5py.File, source: str) -> tuple[str, tuple[KLayer, ...], tuple[int, int]]:
    config = json.loads(f.attrs["model_config"])
    entries = config["config"]["layers"]
    _check_chain(entries, source)
    layers = tuple(layer for layer in (parse_layer(e, source) for e in entries) if layer is not None)
    shape = entries[0]["config"].get("batch_input_shape") or entries[0]["config"].get("batch_shape")
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"input shape {shape} is not (batch, height, width, 3)")
    return str(config["config"]["name"]), _nonempty(layers), _input_hw(shape)


def _architecture(architecture: str, names: list[str]) -> tuple[str, tuple[KLayer, ...], tuple[int, int]]:
    """A built-in Keras name, or a full model file whose layers are cut after the last one the weights name."""
    if architecture in KERAS_ARCHITECTURES:
        return architecture, *keras_architecture(architecture, include_top="fc1" in names)
    try:
        with h5py.File(architecture, "r") as f:
            name, layers, input_hw = _full_model_layers(f, architecture)
    except OSError:
        keras_architecture(architecture)  # raises the list of known names
        raise
    last = max((i for i, layer in enumerate(layers) if layer.name in names), default=-1)
    return name, layers[: last + 1], input_hw


def load_keras(path: str | Path, architecture: str | None = None) -> KerasModel:
    """A full Keras model file, or a weights-only file with ``architecture``: a built-in Keras name (vgg-16, vgg-19)
    or the path of a full model file whose layers it fills (e.g. a no-top file with the full model)."""
    path, source = Path(path), str(path)
    with _reading(source), h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        if "layer_names" not in group.attrs:
            raise WeightsError(f"{source}: an HDF5 file with no Keras layers (no layer_names attribute)")
        names = _names(group)
        weights = _read_weight_groups(group, names, source)
        if "model_config" in f.attrs and architecture is None:
            name, layers, input_hw = _full_model_layers(f, source)
        elif architecture is None:
            raise WeightsError(
                f"{source}: a weights-only Keras file; pair it with an architecture: a built-in name "
                f"({', '.join(KERAS_ARCHITECTURES)}) or a full Keras model file"
            )
        else:
            name, layers, input_hw = _architecture(architecture, names)
    with _reading(source):
        return build(name, layers, weights, input_hw, source)


def _check_chain(entries: list[dict[str, Any]], source: str) -> None:
    for previous, entry in itertools.pairwise(entries):
        inbound = entry.get("inbound_nodes") or []
        sources = [node[0] for nodes in inbound for node in (nodes if isinstance(nodes, list) else [])
                   if isinstance(node, list)]
        if sources and (len(sources) != 1 or sources[0] != previous["config"]["name"]):
            raise WeightsError(
                f"{source}: layer {entry['config']['name']!r} does not follow {previous['config']['name']!r}: "
                "only linear chains of layers are supported"
            )


def _vgg(stages: tuple[int, ...], include_top: bool) -> tuple[KLayer, ...]:
    layers = []
    for block, (filters, count) in enumerate(zip((64, 128, 256, 512, 512), stages, strict=True), start=1):
        layers += [KLayer("Conv2D", f"block{block}_conv{i}", filters=filters, kernel=(3, 3), padding="same",
                          activation="relu") for i in range(1, count + 1)]
        layers.append(KLayer("MaxPooling2D", f"block{block}_pool", kernel=(2, 2), strides=(2, 2)))
    if include_top:
        layers += [KLayer("Flatten", "flatten"), KLayer("Dense", "fc1", units=4096, activation="relu"),
                   KLayer("Dense", "fc2", units=4096, activation="relu"),
                   KLayer("Dense", "predictions", units=1000, activation="softmax")]
    return tuple(layers)


KERAS_ARCHITECTURES = {"vgg-16": (2, 2, 3, 3, 3), "vgg-19": (2, 2, 4, 4, 4)}


def keras_architecture(name: str, include_top: bool = True) -> tuple[tuple[KLayer, ...], tuple[int, int]]:
    if name not in KERAS_ARCHITECTURES:
        raise WeightsError(
            f"no built-in Keras architecture {name!r}; known: {', '.join(KERAS_ARCHITECTURES)}, "
            "or the path of a full Keras model file"
        )
    return _vgg(KERAS_ARCHITECTURES[name], include_top), (224, 224)
