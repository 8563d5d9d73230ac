"""Darknet networks as jaxdream models: a cfg (built-in name or path) with ``.weights`` or a converted ``.h5``,
Darknet's letterbox preprocessing, and Darknet's ImageNet names for 1000-class heads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdream import converted
from jaxdream import weights as builtin_weights
from jaxdream.darknet import cfg as C
from jaxdream.darknet import zoo
from jaxdream.darknet.network import CANVAS_KINDS, Network
from jaxdream.darknet.shapes import input_shapes, layer_shapes
from jaxdream.darknet.weights import Entry, file_layout, layer_key, parse_weights, read_weights
from jaxdream.errors import JaxdreamError, OptionError, WeightsError
from jaxdream.image import letterbox
from jaxdream.protocol import Model, Params, Shape


@dataclass(frozen=True, eq=False)  # identity hash: params are arrays
class DarknetModel(Model):
    """A Darknet network ready to run. ``params`` is {'layer_i': {name: float32 array}}, loaded once."""

    name: str
    cfg: C.Cfg
    params: Params
    labels: tuple[str, ...] | None = None

    def network(self, precision: str = "f32") -> Network:
        """The Flax module in compute mode ``precision`` (built while tracing only, so it is not kept)."""
        return Network(self.cfg, tuple(input_shapes(self.cfg)), precision)

    @property
    def num_layers(self) -> int:
        return len(self.cfg.layers)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.cfg.net.height, self.cfg.net.width

    @property
    def num_classes(self) -> int:
        return int(np.prod(layer_shapes(self.cfg)[self.logits_layer]))

    @property
    def logits_layer(self) -> int:
        for spec in reversed(self.cfg.layers):
            if isinstance(spec, C.Softmax):
                return spec.index - 1
        raise OptionError(f"{self.name} is not a classifier: its cfg has no [softmax] layer")

    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        return layer_shapes(self.cfg, height, width, upto)

    def check_layer(self, layer: int, what: str = "layer") -> C.Layer:
        if not 0 <= layer < self.num_layers:
            raise OptionError(
                f"{what} {layer} is out of range: {self.name} has layers 0 .. {self.num_layers - 1} "
                "(`jaxdream weights info` lists them)"
            )
        spec = self.cfg.layers[layer]
        if isinstance(spec, C.Head):
            raise OptionError(
                f"{what} {layer} is a [{spec.kind}] detection/cost head ({self.cfg.where(spec)}); pick an earlier layer"
            )
        return spec

    def param_shapes(self) -> dict[str, Shape]:
        return {f"{layer_key(entry.layer)}/{entry.name}": _model_shape(entry) for entry in file_layout(self.cfg)}

    def params_from_flat(self, flat: Mapping[str, Any]) -> Params:
        nested: dict[str, dict[str, Any]] = {}
        for path, leaf in flat.items():
            layer, _, name = path.partition("/")
            nested.setdefault(layer, {})[name] = leaf
        return nested

    def apply(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32"
              ) -> dict[int, jax.Array]:
        return self.network(precision).apply({"params": params}, x, layers)

    def canvas_ready(self, upto: int) -> bool:
        return all(spec.kind in CANVAS_KINDS for spec in self.cfg.layers[: upto + 1])

    def apply_on_canvas(self, params: Params, x: jax.Array, layers: tuple[int, ...], valid: jax.Array,
                        precision: str = "f32") -> dict[int, jax.Array]:
        return self.network(precision).apply({"params": params}, x, layers, valid)

    def preprocess(self, x: jax.Array) -> jax.Array:
        """As Darknet's `classify` prepares images: letterboxed to the [net] size with Darknet's resize and gray
        fill."""
        return letterbox(x, self.cfg.net.height, self.cfg.net.width)

    @property
    def input_note(self) -> str:
        height, width = self.input_size
        return f"values: [0, 1] RGB; resize: Darknet's letterbox to {width}x{height} (its own resize, gray fill)"

    def apply_logits(self, params: Params, x: jax.Array, precision: str = "f32", resize: bool = True) -> jax.Array:
        layer = self.logits_layer
        out = self.apply(params, self.network_input(x, resize), (layer,), precision)[layer]
        return out.reshape(out.shape[0], -1)

    def to_converted(self, source_sha256: str) -> converted.Converted:
        return converted.Converted(self.name, self.cfg.text, self.params, source_sha256, self.labels)

    def describe(self, height: int | None = None, width: int | None = None) -> list[dict[str, Any]]:
        """The layer table: index, type, output (h, w, c), parameter count, and the cfg line."""
        shapes = layer_shapes(self.cfg, height, width)
        counts: dict[int, int] = {}
        for entry in file_layout(self.cfg):
            counts[entry.layer] = counts.get(entry.layer, 0) + entry.count
        return [
            {"index": s.index, "type": s.kind, "output": shapes[s.index], "params": counts.get(s.index, 0),
             "line": s.line}
            for s in self.cfg.layers
        ]


def _model_shape(entry: Entry) -> tuple[int, ...]:
    shape = entry.file_shape
    if entry.name != "kernel":
        return shape
    return (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else (shape[1], shape[0])


def imagenet_labels(cfg: C.Cfg) -> tuple[str, ...] | None:
    """Darknet's ImageNet-1k names (its own order) for a cfg whose softmax has 1000 classes, else None."""
    softmax = [s for s in cfg.layers if isinstance(s, C.Softmax)]
    if not softmax or int(np.prod(layer_shapes(cfg, upto=softmax[-1].index)[-1])) != 1000:
        return None
    return tuple(builtin_weights.labels_text(builtin_weights.DARKNET_1K_NAMES).splitlines())


def from_converted(stored: converted.Converted, source: str) -> DarknetModel:
    """A Darknet model from jaxdream's own .h5 (kind 'darknet': the cfg text and the parameters)."""
    cfg = C.parse_cfg(stored.architecture, f"{source}:cfg")
    shell = DarknetModel(stored.name, cfg, {}, stored.labels)
    return DarknetModel(stored.name, cfg, shell.params_from_flat(stored.params), stored.labels).checked(source)


def _weights_for(model: DarknetModel, weights: str | Path) -> Params:
    path = Path(weights)
    if path.suffix.lower() in (".h5", ".hdf5"):
        stored = converted.read_converted(path)
        if stored.kind != "darknet" or stored.architecture.strip() != model.cfg.text.strip():
            raise WeightsError(
                f"{path}: this converted file was made for a different architecture than {model.cfg.source}; "
                f"load it alone with load_model('{path}')"
            )
        return model.params_from_flat(stored.params)
    return read_weights(path, model.cfg)[0]


def architecture(name_or_path: str | Path) -> DarknetModel:
    """The network of a built-in name or a cfg path, with no parameters (to describe, plan or fill)."""
    text, path = str(name_or_path), Path(name_or_path)
    entry = zoo.find(text)
    if entry is not None and not path.exists():
        return DarknetModel(entry.name, C.parse_cfg(entry.cfg_text(), entry.name), {}, entry.labels())
    cfg = C.load_cfg(path)
    return DarknetModel(path.name.split(".", 1)[0], cfg, {}, imagenet_labels(cfg))  # Darknet's `basecfg` name


def load(name_or_path: str | Path, weights: str | Path | None, progress: zoo.Progress | None = None
         ) -> DarknetModel:
    """A cfg (built-in name or path) with Darknet ``.weights``, a converted ``.h5`` or a zoo name; a built-in name
    with no weights fetches its official weights into the cache on first use."""
    shell = architecture(name_or_path)
    builtin = zoo.find(str(name_or_path)) if not Path(name_or_path).exists() else None
    if weights is None:
        if builtin is None:
            raise JaxdreamError(f"{name_or_path}: a cfg needs weights: pass a Darknet .weights or converted .h5 file")
        weights = zoo.fetch(builtin, progress)
    elif (named := zoo.find(str(weights))) is not None and not Path(weights).exists():
        weights = zoo.fetch(named, progress)
    return DarknetModel(shell.name, shell.cfg, _weights_for(shell, weights), shell.labels).checked(str(weights))


def model_from_bytes(cfg: C.Cfg, data: bytes, name: str = "model", source: str = "<weights>") -> DarknetModel:
    """A model from cfg + .weights bytes in memory (tests, random weights for benchmarks)."""
    params, _ = parse_weights(data, cfg, source)
    return DarknetModel(name, cfg, params)
