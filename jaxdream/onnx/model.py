"""An ONNX classifier or feature network as a jaxdream model: the graph runs as a pure JAX function of (params,
image), so it dreams under the same compiled programs, vmap and sharding as the other backends.

Every node's (first) output is a dream layer, by its name in the graph or its index. The classifier's logits are
the input of a final Softmax when the graph ends in one. An ONNX file does not say what values it expects, so
``preprocess`` (caffe, torch, tf or raw) and ``labels`` are given when it is loaded, and kept in a converted .h5.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream import converted
from jaxdream import weights as builtin
from jaxdream.errors import OptionError, WeightsError
from jaxdream.files import read_user_file
from jaxdream.image import ecosystem_resize, ecosystem_resize_note
from jaxdream.onnx import network
from jaxdream.onnx.graph import Graph, Node, initializers, parse
from jaxdream.protocol import Model, Params, Shape

log = logging.getLogger("jaxdream")
PREPROCESSING = ("caffe", "torch", "tf", "raw")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
MAX_ONNX_BYTES = 2**31 - 1  # protobuf's own limit on one message
MAX_LABELS_BYTES = 16 << 20
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class OnnxModel(Model):
    """A loaded ONNX graph; ``params`` maps initializer names to float32 arrays."""

    name: str
    graph: Graph
    params: Params
    preprocessing: str | None = None
    labels: tuple[str, ...] | None = None

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.graph.nodes

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.graph.input_hw

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(node.outputs[0] for node in self.nodes)

    @property
    def num_layers(self) -> int:
        return len(self.nodes)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_hw

    @property
    def logits_layer(self) -> int:
        last = self.nodes[-1]
        if last.op == "Softmax":
            return self.layer_names.index(last.inputs[0])
        return len(self.nodes) - 1

    @functools.cached_property  # read per unit by an atlas: tracing the network each time cost ~50 ms
    def num_classes(self) -> int:
        probe = jax.ShapeDtypeStruct((1, *self.input_hw, 3), jnp.float32)
        layer = self.logits_layer
        return int(np.prod(jax.eval_shape(lambda x: self.run(self.params, x, (layer,))[layer], probe).shape[1:]))

    def check_layer(self, layer: int, what: str = "layer") -> Node:
        if not 0 <= layer < self.num_layers:
            raise OptionError(f"{what} {layer} is out of range: {self.name} has layers 0 .. {self.num_layers - 1}")
        return self.nodes[layer]

    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        wanted = tuple(range(upto + 1))
        try:
            out = jax.eval_shape(lambda x: self.run(self.params, x, wanted),
                                 jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32))
        except (TypeError, ValueError, WeightsError) as err:
            raise WeightsError(f"{self.name}: a {width}x{height} input does not fit ({err})") from None
        return [tuple(int(d) for d in out[i].shape[1:]) for i in wanted]

    def normalize(self, x: jax.Array) -> jax.Array:
        if self.preprocessing is None:
            raise OptionError(f"{self.name}: an ONNX file does not say what values it expects; pass --preprocess "
                              f"{'|'.join(PREPROCESSING)} (preprocess= in load_model)")
        if self.preprocessing == "caffe":
            return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN, x.dtype)
        if self.preprocessing == "torch":
            return (x - jnp.asarray(TORCH_MEAN, x.dtype)) / jnp.asarray(TORCH_STD, x.dtype)
        return x * 2.0 - 1.0 if self.preprocessing == "tf" else x

    def preprocess(self, x: jax.Array) -> jax.Array:
        """Resized as the preset's ecosystem does (``ecosystem_resize``), then the value mapping."""
        return self.normalize(ecosystem_resize(x, *self.input_hw, self.preprocessing or "raw"))

    @property
    def input_note(self) -> str:
        if self.preprocessing is None:
            return "values: not given (--preprocess caffe|torch|tf|raw)"
        return f"values: {self.preprocessing}; resize: {ecosystem_resize_note(self.preprocessing, *self.input_hw)}"

    @property
    def head_relus(self) -> frozenset[int]:
        """The ReLUs between the classifier's last linear node (Conv, Gemm, MatMul) and its logits."""
        logits = self.logits_layer
        last = max((i for i, n in enumerate(self.nodes[: logits + 1]) if n.op in ("Conv", "Gemm", "MatMul")),
                   default=-1)
        return frozenset(i for i in range(last + 1, logits + 1) if self.nodes[i].op == "Relu")

    @property
    def nonnegative_logits(self) -> bool:
        return bool(self.head_relus)

    def run(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32",
            straight_through: frozenset[int] = frozenset()) -> dict[int, jax.Array]:
        """The graph on NHWC input already mapped to the network's values (``network.run``)."""
        return network.run(self.graph, params, x, layers, precision, straight_through)

    def param_shapes(self) -> dict[str, Shape]:
        return dict(self.graph.param_shapes)

    def params_from_flat(self, flat: Mapping[str, Any]) -> Params:
        return dict(flat)

    def apply(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32"
              ) -> dict[int, jax.Array]:
        return self.run(params, x, layers, precision)

    def apply_logits(self, params: Params, x: jax.Array, precision: str = "f32", resize: bool = True) -> jax.Array:
        """The logits, as the graph computes them. The ReLUs of the classifier's head pass gradients that would raise
        an inactive unit (``redirected_relu``): SqueezeNet's logits are the average of ReLU(conv10), and a class
        whose map is all negative (most of them, for a given photo) would otherwise get no gradient at all."""
        layer = self.logits_layer
        y = self.run(params, self.network_input(x, resize), (layer,), precision, self.head_relus)[layer]
        return y.reshape(y.shape[0], -1)

    def to_converted(self, source_sha256: str) -> converted.Converted:
        names = sorted(self.params)  # initializer names may hold any character: stored under p00000 ...
        architecture = json.dumps({"graph": base64.b64encode(self.graph.graph_bytes).decode(), "names": names,
                                   "shapes": [self.param_shapes().get(n) for n in names],
                                   "preprocessing": self.preprocessing, "input": self.input_note})
        params = {f"p{i:05d}": self.params[name] for i, name in enumerate(names)}
        return converted.Converted(self.name, architecture, params, source_sha256, self.labels, "onnx")

    def describe(self, height: int | None = None, width: int | None = None) -> list[dict[str, Any]]:
        h, w = height or self.input_hw[0], width or self.input_hw[1]
        shapes = self.layer_output_shapes(h, w, self.num_layers - 1)
        return [{"index": i, "type": node.op, "name": node.outputs[0], "output": (1,) * (3 - len(shapes[i]))
                 + shapes[i], "params": sum(int(np.size(self.params[n])) for n in node.inputs if n in self.params)}
                for i, node in enumerate(self.nodes)]


def _labels(path: str | Path | None, count: int | None) -> tuple[str, ...] | None:
    """A label file: one name per line, or `index,name` lines (indices 0 .. n-1 in order)."""
    if path is None:
        return None
    raw = read_user_file(path, "the label file", MAX_LABELS_BYTES, OptionError, "a label file is one name a line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OptionError(f"{path}: the label file is not UTF-8 text; save it as UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    names = []
    for number, line in enumerate(lines):
        head, sep, rest = line.partition(",")
        names.append(rest.strip() if sep and head.strip() == str(number) else line.strip())
    if count is not None and len(names) != count:
        raise OptionError(f"{path}: {len(names)} labels for a model with {count} classes")
    return tuple(names)


def check_preprocess(preprocess: str | None) -> str | None:
    if preprocess is not None and preprocess not in PREPROCESSING:
        raise OptionError(f"--preprocess {preprocess!r}: use one of {', '.join(PREPROCESSING)}")
    return preprocess


def from_proto(model_proto: Any, name: str, source: str, preprocess: str | None = None,
               labels: str | Path | None = None) -> OnnxModel:
    """A checked OnnxModel from a parsed ModelProto, its weights from its initializers."""
    params = initializers(model_proto, source)
    graph = parse(model_proto, source, {key: tuple(np.shape(a)) for key, a in params.items()})
    model = OnnxModel(name, graph, params, check_preprocess(preprocess)).checked(source)
    network.check(graph, params, source)
    if labels is None:
        return OnnxModel(name, graph, params, model.preprocessing, imagenet_names(model))
    return OnnxModel(name, graph, params, model.preprocessing, _labels(labels, model.num_classes))


def imagenet_names(model: Model) -> tuple[str, ...] | None:
    """The standard ImageNet names (sorted WordNet ids: the order of Keras, torchvision and nearly every exported
    ImageNet model) for a 1000-class classifier that came without labels, said in one line; else None."""
    try:
        classes = model.num_classes
    except OptionError:  # not a classifier
        return None
    if classes != 1000:
        return None
    log.warning("%s: no --labels given; using the standard ImageNet class names (sorted WordNet order), as nearly "
                "every exported ImageNet model does; pass --labels if this one uses another order", model.name)
    return tuple(builtin.labels_text(builtin.KERAS_1K_NAMES).splitlines())


def load_onnx(path: str | Path, preprocess: str | None = None, labels: str | Path | None = None) -> OnnxModel:
    """An .onnx file as a model (``preprocess``: caffe, torch, tf or raw; ``labels``: a label file)."""
    try:
        import onnx
    except ImportError:
        raise OptionError(f"{path}: reading ONNX files needs the onnx package: pip install 'jaxdream[onnx]'") from None

    data = read_user_file(path, "the ONNX file", MAX_ONNX_BYTES, WeightsError,
                          "protobuf cannot hold a larger model (weights in external files are not supported)")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as err:
        raise WeightsError(f"{path}: not an ONNX model onnx can read ({type(err).__name__}: {err})") from None
    return from_proto(proto, Path(path).name.split(".", 1)[0], str(path), preprocess, labels)


def from_converted(stored: converted.Converted, source: str) -> OnnxModel:
    """An ONNX model from jaxdream's own .h5: the stripped graph, the parameters under the names the graph uses,
    checked against the shapes recorded with them."""
    import onnx

    try:
        spec = json.loads(stored.architecture)
        proto = onnx.load_model_from_string(base64.b64decode(spec["graph"]))
        names = list(spec["names"])
        # Files from before shapes were recorded: their own arrays' shapes (the graph still checks every read).
        shapes = [tuple(shape) if shape is not None else np.shape(stored.params.get(f"p{i:05d}"))
                  for i, shape in enumerate(spec.get("shapes") or [None] * len(names))]
    except (ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"{source}: the stored ONNX graph is damaged ({type(err).__name__}: {err})") from None
    params = {name: stored.params.get(f"p{i:05d}") for i, name in enumerate(names)}
    missing = [name for name, array in params.items() if array is None]
    if missing or len(stored.params) != len(names):
        raise WeightsError(f"{source}: parameters do not fit the stored graph: {len(stored.params)} stored for "
                           f"{len(names)} names" + (f"; missing {missing[0]}" if missing else ""))
    graph = parse(proto, source, dict(zip(names, shapes, strict=True)))
    if spec.get("preprocessing") not in (None, *PREPROCESSING):
        raise WeightsError(f"{source}: the stored preprocessing {spec.get('preprocessing')!r} is not one of "
                           f"{', '.join(PREPROCESSING)}; the file is damaged")
    model = OnnxModel(stored.name, graph, params, spec.get("preprocessing"), stored.labels).checked(source)
    network.check(graph, params, source)
    return model
