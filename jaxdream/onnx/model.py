"""An ONNX classifier or feature network as a jaxdream model: the graph runs as a pure JAX function of (params,
image), so it dreams under the same compiled programs, vmap and sharding as the other backends.

Every node's (first) output is a dream layer, by its name in the graph or its index. The classifier's logits are
the input of a final Softmax when the graph ends in one. An ONNX file does not say what values it expects, so
``preprocess`` (caffe, torch, tf or raw) and ``labels`` are given when it is loaded, and kept in a converted .h5.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream import converted
from jaxdream.errors import OptionError, WeightsError
from jaxdream.image import darknet_resize
from jaxdream.model import ModelBase, Params
from jaxdream.onnx.ops import OPS, softmax

PREPROCESSING = ("caffe", "torch", "tf", "raw")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SUPPORTED = tuple(sorted([*OPS, "Constant", "Softmax"]))


@dataclass(frozen=True)
class Node:
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(frozen=True, eq=False)
class OnnxModel(ModelBase):
    """A loaded ONNX graph; ``params`` maps initializer names to float32 arrays."""

    name: str
    nodes: tuple[Node, ...]
    params: Params
    input_name: str
    input_hw: tuple[int, int]
    opset: int
    graph_bytes: bytes  # the graph without its weights (for converted files and the fingerprint)
    preprocessing: str | None = None
    labels: tuple[str, ...] | None = None

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

    @property
    def num_classes(self) -> int:
        probe = jax.ShapeDtypeStruct((1, *self.input_hw, 3), jnp.float32)
        layer = self.logits_layer
        return int(np.prod(jax.eval_shape(lambda x: self.run(self.params, x, (layer,))[layer], probe).shape[1:]))

    def resolve_layer(self, layer: int | str) -> int:
        if isinstance(layer, str) and not layer.strip().lstrip("-").isdigit():
            if layer not in self.layer_names:
                raise OptionError(f"{self.name} has no layer named {layer!r} (`jaxdream weights info` lists them)")
            return self.layer_names.index(layer)
        return int(layer)

    def check_layer(self, layer: int, what: str = "layer") -> Node:
        if not 0 <= layer < self.num_layers:
            raise OptionError(f"{what} {layer} is out of range: {self.name} has layers 0 .. {self.num_layers - 1}")
        return self.nodes[layer]

    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        wanted = tuple(range(upto + 1))
        try:
            out = jax.eval_shape(lambda x: self.run(self.params, x, wanted),
                                 jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32))
        except (TypeError, ValueError) as err:
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
        """Squash to the graph's input size, then the value mapping."""
        return self.normalize(darknet_resize(x, *self.input_hw))

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
        """The graph on NHWC input (already mapped to the network's values), up to the deepest requested layer;
        each 4-D output back to NHWC, any other as (N, 1, 1, features). The ReLUs of ``straight_through`` are
        ``redirected_relu``s (the same values, another gradient)."""
        values: dict[str, Any] = {"": None, self.input_name: jnp.transpose(x, (0, 3, 1, 2)), **params}
        wanted, out = set(layers), {}
        for index, node in enumerate(self.nodes[: max(layers) + 1]):
            inputs = [values[name] for name in node.inputs]
            if node.op == "Constant":
                results = [node.attrs["value"]]
            elif node.op == "Softmax":
                results = softmax(inputs, node.attrs, precision, self.opset)
            elif index in straight_through:
                results = [redirected_relu(inputs[0])]
            else:
                results = OPS[node.op](inputs, node.attrs, precision)
            values.update(zip(node.outputs, results, strict=False))
            if index in wanted:
                y = jnp.asarray(results[0])
                out[index] = jnp.transpose(y, (0, 2, 3, 1)) if y.ndim == 4 else y.reshape(y.shape[0], 1, 1, -1)
        return out

    def apply(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32"
              ) -> dict[int, jax.Array]:
        return self.run(params, x, layers, precision)

    def apply_logits(self, params: Params, x: jax.Array, precision: str = "f32") -> jax.Array:
        """The logits, as the graph computes them. The ReLUs of the classifier's head pass gradients that would raise
        an inactive unit (``redirected_relu``): SqueezeNet's logits are the average of ReLU(conv10), and a class
        whose map is all negative (most of them, for a given photo) would otherwise get no gradient at all."""
        layer = self.logits_layer
        y = self.run(params, self.preprocess(x), (layer,), precision, self.head_relus)[layer]
        return y.reshape(y.shape[0], -1)

    def to_converted(self, source_sha256: str) -> converted.Converted:
        names = sorted(self.params)
        architecture = json.dumps({"graph": base64.b64encode(self.graph_bytes).decode(), "names": names,
                                   "preprocessing": self.preprocessing})
        params = {f"p{i:05d}": self.params[name] for i, name in enumerate(names)}
        return converted.Converted(self.name, architecture, params, source_sha256, self.labels, "onnx")

    def describe(self, height: int | None = None, width: int | None = None) -> list[dict[str, Any]]:
        h, w = height or self.input_hw[0], width or self.input_hw[1]
        shapes = self.layer_output_shapes(h, w, self.num_layers - 1)
        return [{"index": i, "type": node.op, "name": node.outputs[0], "output": (1,) * (3 - len(shapes[i]))
                 + shapes[i], "params": sum(int(np.size(self.params[n])) for n in node.inputs if n in self.params)}
                for i, node in enumerate(self.nodes)]


@jax.custom_vjp
def redirected_relu(x: jax.Array) -> jax.Array:
    """ReLU whose gradient also reaches an inactive unit when it would raise it (Lucid's "redirected ReLU"): the
    values are the ReLU's; gradients that push a dead unit further down are still dropped."""
    return jax.nn.relu(x)


def _redirected_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.nn.relu(x), x


def _redirected_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return (jnp.where((x > 0) | (g > 0), g, jnp.zeros((), g.dtype)),)


redirected_relu.defvjp(_redirected_fwd, _redirected_bwd)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    attrs = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if hasattr(value, "raw_data") or hasattr(value, "dims"):  # a tensor (Constant's value)
            value = numpy_helper.to_array(value)
            value = value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
        elif isinstance(value, bytes):
            value = value.decode()
        attrs[attribute.name] = value
    if node.op_type == "Constant" and "value" not in attrs:
        for key in ("value_float", "value_int", "value_floats", "value_ints"):
            if key in attrs:
                attrs["value"] = np.asarray(attrs[key], np.float32 if "float" in key else np.int64)
    return attrs


def _labels(path: str | Path | None, count: int | None) -> tuple[str, ...] | None:
    """A label file: one name per line, or `index,name` lines (indices 0 .. n-1 in order)."""
    if path is None:
        return None
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    names = []
    for number, line in enumerate(lines):
        head, sep, rest = line.partition(",")
        names.append(rest.strip() if sep and head.strip() == str(number) else line.strip())
    if count is not None and len(names) != count:
        raise OptionError(f"{path}: {len(names)} labels for a model with {count} classes")
    return tuple(names)


def from_proto(model_proto: Any, name: str, source: str, preprocess: str | None = None,
               labels: str | Path | None = None, params: Params | None = None) -> OnnxModel:
    """An OnnxModel from a parsed ModelProto (its weights from its initializers unless ``params`` is given)."""
    from onnx import numpy_helper

    if preprocess is not None and preprocess not in PREPROCESSING:
        raise OptionError(f"--preprocess {preprocess!r}: use one of {', '.join(PREPROCESSING)}")
    graph = model_proto.graph
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    if params is None:
        arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        params = {name: a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a
                  for name, a in arrays.items()}
    images = [i for i in graph.input if i.name not in params]
    if len(images) != 1:
        raise WeightsError(f"{source}: the graph has {len(images)} inputs besides its weights; jaxdream needs one "
                           "image input")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in images[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise WeightsError(f"{source}: the input {images[0].name!r} has shape {dims}; jaxdream needs (N, 3, H, W)")
    if min(dims[2:]) < 1:
        raise WeightsError(f"{source}: the input {images[0].name!r} has a dynamic height or width; export the model "
                           "with a fixed input size (e.g. 224x224)")
    nodes = []
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            raise OptionError(f"{source}: node {node.name or index!r} is a {node.op_type} (opset {opset}), which "
                              f"jaxdream does not support; supported: {', '.join(SUPPORTED)}")
        nodes.append(Node(node.op_type, node.name or f"node{index}", tuple(node.input), tuple(node.output),
                          _attributes(node)))
    stripped = type(model_proto)()
    stripped.CopyFrom(model_proto)
    del stripped.graph.initializer[:]
    model = OnnxModel(name, tuple(nodes), params, images[0].name, (dims[2], dims[3]), opset,
                      stripped.SerializeToString(), preprocess)
    if labels is not None:
        model = OnnxModel(name, model.nodes, params, model.input_name, model.input_hw, opset, model.graph_bytes,
                          preprocess, _labels(labels, model.num_classes))
    return model


def load_onnx(path: str | Path, preprocess: str | None = None, labels: str | Path | None = None) -> OnnxModel:
    """An .onnx file as a model (``preprocess``: caffe, torch, tf or raw; ``labels``: a label file)."""
    try:
        import onnx
    except ImportError:
        raise OptionError(f"{path}: reading ONNX files needs the onnx package: pip install 'jaxdream[onnx]'") from None

    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such ONNX file") from None
    except Exception as err:
        raise WeightsError(f"{path}: not an ONNX model onnx can read ({type(err).__name__}: {err})") from None
    return from_proto(proto, Path(path).name.split(".", 1)[0], str(path), preprocess, labels)


def from_converted(stored: converted.Converted, source: str) -> OnnxModel:
    """An ONNX model from jaxdream's own .h5."""
    import onnx

    spec = json.loads(stored.architecture)
    proto = onnx.load_model_from_string(base64.b64decode(spec["graph"]))
    params = {name: stored.params[f"p{i:05d}"] for i, name in enumerate(spec["names"])}
    model = from_proto(proto, stored.name, source, spec["preprocessing"], None, params)
    return OnnxModel(model.name, model.nodes, params, model.input_name, model.input_hw, model.opset,
                     model.graph_bytes, model.preprocessing, stored.labels)
