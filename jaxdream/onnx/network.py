"""An ONNX graph as a pure JAX function: the nodes run in order through the one op table (ops.py)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdream.errors import JaxdreamError, WeightsError
from jaxdream.onnx.graph import Graph
from jaxdream.onnx.ops import MAX_ELEMENTS, OPS, conv, max_pool, softmax
from jaxdream.ops import redirected_relu


def check(graph: Graph, params: Any, source: str) -> None:
    """Every node's shapes against its operator's rules, for the graph's own input size, before anything runs (an
    abstract evaluation: nothing is computed or allocated). Integer parameters (shapes, indices, axes) stay
    concrete, so their values are checked too."""
    concrete = {k: v for k, v in params.items() if not np.issubdtype(np.asarray(v).dtype, np.floating)}
    abstract = {k: jax.ShapeDtypeStruct(np.shape(v), jnp.float32) for k, v in params.items() if k not in concrete}
    probe = jax.ShapeDtypeStruct((1, *graph.input_hw, 3), jnp.float32)
    try:
        jax.eval_shape(lambda p, x: run(graph, {**p, **concrete}, x, (len(graph.nodes) - 1,)), abstract, probe)
    except WeightsError as err:
        raise WeightsError(f"{source}: {err}") from None


def run(graph: Graph, params: Any, x: jax.Array, layers: tuple[int, ...], precision: str = "f32",
        straight_through: frozenset[int] = frozenset()) -> dict[int, jax.Array]:
    """The graph on NHWC input (already mapped to the network's values), up to the deepest requested layer; each
    4-D output back to NHWC, any other as (N, 1, 1, features). The ReLUs of ``straight_through`` are
    ``redirected_relu``s (the same values, another gradient)."""
    values: dict[str, Any] = {"": None, graph.input_name: x, **params}
    held_last = {graph.input_name}  # values held NHWC (XLA:CPU's layout), each as the graph's NCHW value permuted
    wanted, out = set(layers), {}
    for index, node in enumerate(graph.nodes[: max(layers) + 1]):
        try:  # shapes are static: every check runs once, while the graph is traced
            last = _channels_last(node, held_last)
            inputs = [values[name] if last or name not in held_last else jnp.transpose(values[name], (0, 3, 1, 2))
                      for name in node.inputs]
            if node.op == "Constant":
                results = [node.attrs["value"]]
            elif node.op == "Softmax":
                results = softmax(inputs, node.attrs, precision, graph.opset)
            elif index in straight_through:
                results = [redirected_relu(inputs[0])]
            elif last:
                results = LAST_OPS[node.op](inputs, node.attrs, precision)
            else:
                results = OPS[node.op](inputs, node.attrs, precision)
            for result in results:
                if math.prod(np.shape(result)) > MAX_ELEMENTS:
                    raise ValueError(f"its output of shape {tuple(np.shape(result))} has more than {MAX_ELEMENTS:,} "
                                     "values")
        except JaxdreamError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError) as err:
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise WeightsError(f"node {node.name!r} ({node.op}): {text}") from None
        values.update(zip(node.outputs, results, strict=False))
        if last:
            held_last.update(node.outputs)
        if index in wanted:
            y = jnp.asarray(results[0])
            out[index] = y if last else jnp.transpose(y, (0, 2, 3, 1)) if y.ndim == 4 else \
                y.reshape(y.shape[0], 1, 1, -1)
    return out


# Ops that run on values held channels-last and give channels-last values: convolutions and pools directly, the
# elementwise ones as they are, Concat over channels on the last axis. Every other op gets its inputs back in NCHW.
# Why: transposing around each Conv alone left 51 transposes a SqueezeNet render step (they cancel only between
# consecutive convs, not around the fire modules' Concat; XLA's profile: ~0.08 s of a batch-16 step). End to end the
# gain stayed within this 2-core machine's noise (benchmarks/NOTES.md, "lucent side by side").
LAST_OPS: dict[str, Any] = {
    "Conv": lambda inputs, attrs, precision: conv(inputs, attrs, precision, channels_last=True),
    "MaxPool": lambda inputs, attrs, precision: max_pool(inputs, attrs, precision, channels_last=True),
    "GlobalAveragePool": lambda inputs, attrs, precision: [jnp.mean(inputs[0], axis=(1, 2), keepdims=True)],
    "Concat": lambda inputs, attrs, precision: [jnp.concatenate(inputs, axis=3)],
    **{op: OPS[op] for op in ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Identity", "Dropout")},
}


def _channels_last(node: Any, held_last: set[str]) -> bool:
    """Whether ``node`` runs on channels-last values: a LAST_OPS op whose data inputs are all held so (a Concat
    only over the channel axis)."""
    if node.op not in LAST_OPS or not node.inputs:
        return False
    data = node.inputs if node.op == "Concat" else node.inputs[:1]
    if not all(name in held_last for name in data):
        return False
    return node.op != "Concat" or int(node.attrs.get("axis", 1)) in (1, -3)
