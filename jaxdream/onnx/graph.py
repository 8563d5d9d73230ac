"""Parsing an ONNX ModelProto into jaxdream's graph: typed nodes, the one image input, the parameters (the
initializers) and the shapes the network expects them to have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxdream.errors import OptionError, WeightsError
from jaxdream.onnx.ops import OPS

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


def attributes(node: Any) -> dict[str, Any]:
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




def initializers(model_proto: Any) -> dict[str, np.ndarray]:
    """The graph's weights, floating ones as float32 (float16 files compute in float32)."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
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
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in images[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise WeightsError(f"{source}: the input {images[0].name!r} has shape {dims}; jaxdream needs (N, 3, H, W)")
    if min(dims[2:]) < 1:
        raise WeightsError(f"{source}: the input {images[0].name!r} has a dynamic height or width; export the model "
                           "with a fixed input size (e.g. 224x224)")
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
        nodes.append(Node(node.op_type, node.name or f"node{index}", tuple(node.input), tuple(node.output),
                          attributes(node)))
    stripped = type(model_proto)()
    stripped.CopyFrom(model_proto)
    del stripped.graph.initializer[:]
    return Graph(tuple(nodes), images[0].name, (dims[2], dims[3]), opset,
                 tuple(sorted((name, tuple(shape)) for name, shape in param_shapes.items())),
                 stripped.SerializeToString())
