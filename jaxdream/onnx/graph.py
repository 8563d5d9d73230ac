"""Parsing an ONNX ModelProto into jaxdream's graph: typed nodes, the one image input, the parameters (the
initializers) and the shapes the network expects them to have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxdream.errors import OptionError, WeightsError
from jaxdream.image import MAX_PIXELS
from jaxdream.onnx.ops import MAX_ELEMENTS, OPS, check_attributes

SUPPORTED = tuple(sorted([*OPS, "Constant", "Softmax"]))


@dataclass(frozen=True)
class Node:
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class Graph:
    """The nodes in order and what they read: ``param_shapes`` names every initializer the nodes expect."""

    nodes: tuple[Node, ...]
    input_name: str
    input_hw: tuple[int, int]
    opset: int
    param_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    graph_bytes: bytes  # the ModelProto without its weights (for converted files and the fingerprint)


def tensor_array(tensor: Any, where: str) -> np.ndarray:
    """A TensorProto's array once its declared shape is bounded and matches the data the file holds: a declared
    2^31-element tensor with no data must not allocate, and data in another file is never read."""
    from onnx import TensorProto, helper, numpy_helper

    dims = [int(d) for d in tensor.dims]
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if min(dims, default=0) < 0 or count > MAX_ELEMENTS:
        raise WeightsError(f"{where}: the tensor {tensor.name!r} declares shape {dims}; at most {MAX_ELEMENTS:,} "
                           "values, none negative")
    if tensor.data_location == TensorProto.EXTERNAL:
        raise WeightsError(f"{where}: the tensor {tensor.name!r} keeps its data in another file; jaxdream reads "
                           "one-file ONNX models: save the model with its weights inside (onnx.save_model(model, "
                           "path, save_as_external_data=False))")
    try:
        if tensor.data_type == TensorProto.STRING:
            held = len(tensor.string_data)
        elif tensor.HasField("raw_data"):
            held = len(tensor.raw_data) // np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        else:
            held = len(getattr(tensor, helper.tensor_dtype_to_field(tensor.data_type)))
    except (KeyError, TypeError, ValueError):
        raise WeightsError(f"{where}: the tensor {tensor.name!r} has data type {tensor.data_type}, which jaxdream "
                           "cannot read") from None
    if held != count:
        raise WeightsError(f"{where}: the tensor {tensor.name!r} declares shape {dims} ({count:,} values) but holds "
                           f"{held:,}; the file is damaged")
    return numpy_helper.to_array(tensor)


def attributes(node: Any, where: str = "") -> dict[str, Any]:
    from onnx import helper

    attrs = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if hasattr(value, "raw_data") or hasattr(value, "dims"):  # a tensor (Constant's value)
            value = tensor_array(value, where or node.name)
            value = value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
        elif isinstance(value, bytes):
            value = value.decode()
        attrs[attribute.name] = value
    if node.op_type == "Constant" and "value" not in attrs:
        for key in ("value_float", "value_int", "value_floats", "value_ints"):
            if key in attrs:
                attrs["value"] = np.asarray(attrs[key], np.float32 if "float" in key else np.int64)
    return attrs




def initializers(model_proto: Any, source: str = "the ONNX file") -> dict[str, np.ndarray]:
    """The graph's weights, floating ones as float32 (float16 files compute in float32)."""
    arrays = {t.name: tensor_array(t, f"{source}: initializer") for t in model_proto.graph.initializer}
    return {name: a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a for name, a in arrays.items()}


def parse(model_proto: Any, source: str, param_shapes: dict[str, tuple[int, ...]]) -> Graph:
    """The graph of ``model_proto`` whose weights have ``param_shapes``; one clear error for an unsupported node, a
    graph that is not one image in, or a node reading a value nothing provides."""
    graph = model_proto.graph
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    images = [i for i in graph.input if i.name not in param_shapes]
    if len(images) != 1:
        raise WeightsError(f"{source}: the graph has {len(images)} inputs besides its weights; jaxdream needs one "
                           "image input")
    from onnx import TensorProto

    tensor_type = images[0].type.tensor_type
    if tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                                     TensorProto.BFLOAT16):
        raise WeightsError(f"{source}: the input {images[0].name!r} is declared of ONNX type {tensor_type.elem_type} "
                           "(not a floating-point type); jaxdream feeds images as floats")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise WeightsError(f"{source}: the input {images[0].name!r} has shape {dims}; jaxdream needs (N, 3, H, W)")
    if min(dims[2:]) < 1:
        raise WeightsError(f"{source}: the input {images[0].name!r} has a dynamic height or width; export the model "
                           "with a fixed input size (e.g. 224x224)")
    if dims[2] * dims[3] > MAX_PIXELS:
        raise WeightsError(f"{source}: the input {images[0].name!r} declares {dims[3]}x{dims[2]} pixels, more than "
                           f"the {MAX_PIXELS:,} an image may have")
    nodes, known = [], {"", images[0].name, *param_shapes}
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            raise OptionError(f"{source}: node {node.name or index!r} is a {node.op_type} (opset {opset}), which "
                              f"jaxdream does not support; supported: {', '.join(SUPPORTED)}")
        missing = [name for name in node.input if name not in known]
        if missing:
            raise WeightsError(f"{source}: node {node.name or index!r} reads {missing[0]!r}, which no node, input or "
                               "weight provides")
        known.update(node.output)
        name = node.name or f"node{index}"
        attrs = attributes(node, f"{source}: node {name!r}")
        try:
            check_attributes(node.op_type, attrs)
        except ValueError as err:
            raise WeightsError(f"{source}: node {name!r} ({node.op_type}): {err}") from None
        nodes.append(Node(node.op_type, name, tuple(node.input), tuple(node.output), attrs))
    stripped = type(model_proto)()
    stripped.CopyFrom(model_proto)
    del stripped.graph.initializer[:]
    return Graph(tuple(nodes), images[0].name, (dims[2], dims[3]), opset,
                 tuple(sorted((name, tuple(shape)) for name, shape in param_shapes.items())),
                 stripped.SerializeToString())
