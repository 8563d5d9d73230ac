"""An ONNX graph as a pure JAX function: the nodes run in order through the one op table (ops.py)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdream.onnx.graph import Graph
from jaxdream.onnx.ops import OPS, softmax


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


def run(graph: Graph, params: Any, x: jax.Array, layers: tuple[int, ...], precision: str = "f32",
        straight_through: frozenset[int] = frozenset()) -> dict[int, jax.Array]:
    """The graph on NHWC input (already mapped to the network's values), up to the deepest requested layer; each
    4-D output back to NHWC, any other as (N, 1, 1, features). The ReLUs of ``straight_through`` are
    ``redirected_relu``s (the same values, another gradient)."""
    values: dict[str, Any] = {"": None, graph.input_name: jnp.transpose(x, (0, 3, 1, 2)), **params}
    wanted, out = set(layers), {}
    for index, node in enumerate(graph.nodes[: max(layers) + 1]):
        inputs = [values[name] for name in node.inputs]
        if node.op == "Constant":
            results = [node.attrs["value"]]
        elif node.op == "Softmax":
            results = softmax(inputs, node.attrs, precision, graph.opset)
        elif index in straight_through:
            results = [redirected_relu(inputs[0])]
        else:
            results = OPS[node.op](inputs, node.attrs, precision)
        values.update(zip(node.outputs, results, strict=False))
        if index in wanted:
            y = jnp.asarray(results[0])
            out[index] = jnp.transpose(y, (0, 2, 3, 1)) if y.ndim == 4 else y.reshape(y.shape[0], 1, 1, -1)
    return out
