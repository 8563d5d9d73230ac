"""A loaded network: architecture + parameters + labels, with the forward/classify API of DESIGN.md."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdream import converted, zoo
from jaxdream import weights as builtin_weights
from jaxdream.darknet import cfg as C
from jaxdream.darknet.shapes import input_shapes, layer_shapes
from jaxdream.darknet.weights import Entry, Params, file_layout, layer_key, parse_weights, read_weights
from jaxdream.errors import JaxdreamError, OptionError, WeightsError
from jaxdream.image import letterbox
from jaxdream.nn import Network, check_precision, default_precision


class ModelBase:
    """What every loaded network offers (Darknet and Keras alike), built on its pure ``apply``/``apply_logits``."""

    name: str
    params: Params
    labels: tuple[str, ...] | None

    @property
    def num_layers(self) -> int:
        raise NotImplementedError

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the network was defined for."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def check_layer(self, layer: int, what: str = "layer") -> Any:
        raise NotImplementedError

    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        """Output (h, w, c) of layers 0 .. upto for an input of height x width; JaxdreamError if one is empty."""
        raise NotImplementedError

    def apply(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32"
              ) -> dict[int, jax.Array]:
        raise NotImplementedError

    def apply_logits(self, params: Params, x: jax.Array, precision: str = "f32") -> jax.Array:
        raise NotImplementedError

    def to_converted(self, source_sha256: str) -> converted.Converted:
        raise NotImplementedError

    @functools.cached_property
    def weights_digest(self) -> str:
        """sha256 of every parameter's name, shape and bytes."""
        digest = hashlib.sha256()
        for path, array in sorted(jax.tree_util.tree_leaves_with_path(self.params), key=lambda item: str(item[0])):
            array = np.ascontiguousarray(np.asarray(array, np.float32))
            digest.update(f"{path}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the kind and architecture (not the parameters): what compiled programs depend on."""
        stored = self.to_converted("")
        return hashlib.sha256(f"{stored.kind}\n{stored.architecture}".encode()).hexdigest()

    def normalize(self, x: jax.Array) -> jax.Array:
        """The network's value mapping of [0, 1] images (Darknet: none); sizes are left alone."""
        return x

    @property
    def nonnegative_logits(self) -> bool:
        """Whether the logits pass a ReLU (no class can be pushed below 0, so BCE toward 0 cannot balance)."""
        return False

    def resolve_layer(self, layer: int | str) -> int:
        """A layer index from an index or its text ('10'); backends with named layers also take names."""
        try:
            return int(layer)
        except ValueError:
            raise OptionError(f"layer {layer!r} is not an index; `jaxdream weights info` lists the layers") from None

    def forward(self, x: Any, layers: tuple[int, ...] | int = (-1,), precision: str | None = None
                ) -> dict[int, jax.Array]:
        """Activations (NHWC) of the requested layers for float32 NHWC images in [0, 1]."""
        from jaxdream.dream import core, runner

        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        layers = tuple(self.num_layers + i if i < 0 else i for i in layers)
        for layer in layers:
            self.check_layer(layer)
        mode = check_precision(precision) if precision else default_precision()
        images = runner.as_batch(x)
        program = runner.Program("forward", self, (layers, mode), lambda: core.forward_layers(self, layers, mode))
        return runner.program_cache()(program, runner.placed_params(self, images), images)

    def logits(self, x: Any, precision: str | None = None) -> jax.Array:
        """(N, classes): the input of the final softmax, for images of any size in [0, 1]."""
        from jaxdream.dream import core, runner

        self.num_classes  # noqa: B018 - raises for a network that is not a classifier
        mode = check_precision(precision) if precision else default_precision()
        images = runner.as_batch(x)
        program = runner.Program("logits", self, mode, lambda: core.logits(self, mode))
        return runner.program_cache()(program, runner.placed_params(self, images), images)

    def predict(self, x: Any, precision: str | None = None) -> np.ndarray:
        """(N, classes) class probabilities."""
        z = np.asarray(self.logits(x, precision), np.float64)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)

    def class_names(self) -> tuple[str, ...]:
        """The labels, or the class indices as text when the model carries none."""
        return self.labels if self.labels is not None else tuple(str(i) for i in range(self.num_classes))


@dataclass(frozen=True, eq=False)  # identity hash: params are arrays
class Model(ModelBase):
    """A Darknet network ready to run. ``params`` is a pytree of float32 arrays loaded once."""

    name: str
    cfg: C.Cfg
    params: Params
    labels: tuple[str, ...] | None = None

    def network(self, precision: str = "f32") -> Network:
        """The Flax module in compute mode ``precision`` (built while tracing only, so it is not kept)."""
        ins = input_shapes(self.cfg)
        return Network(self.cfg, in_channels=tuple(s[2] for s in ins),
                       in_features=tuple(s[0] * s[1] * s[2] for s in ins), precision=precision)

    @property
    def num_layers(self) -> int:
        return len(self.cfg.layers)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.cfg.net.height, self.cfg.net.width

    @property
    def num_classes(self) -> int:
        return int(np.prod(layer_shapes(self.cfg)[self.logits_layer]))

    def layer_output_shapes(self, height: int, width: int, upto: int) -> list[tuple[int, int, int]]:
        return layer_shapes(self.cfg, height, width, upto)

    def check_layer(self, layer: int, what: str = "layer") -> C.Layer:
        """The spec of a layer a dream may target; a clear error for a bad index or a head."""
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

    def apply(self, params: Params, x: jax.Array, layers: tuple[int, ...], precision: str = "f32"
              ) -> dict[int, jax.Array]:
        """Pure forward: the function the compiled dream loop differentiates."""
        return self.network(precision).apply({"params": params}, x, layers)

    def to_converted(self, source_sha256: str) -> converted.Converted:
        return converted.Converted(self.name, self.cfg.text, self.params, source_sha256, self.labels)

    @property
    def logits_layer(self) -> int:
        """The layer whose output feeds the final softmax (the classifier's logits)."""
        for spec in reversed(self.cfg.layers):
            if isinstance(spec, C.Softmax):
                return spec.index - 1
        raise OptionError(f"{self.name} is not a classifier: its cfg has no [softmax] layer")

    def preprocess(self, x: jax.Array) -> jax.Array:
        """Images (N, H, W, 3) in [0, 1] -> the network's input, as Darknet's `classify` prepares it: letterboxed
        to the [net] size with Darknet's resize and gray fill. Differentiable, so dreams can see through it."""
        return letterbox(x, self.cfg.net.height, self.cfg.net.width)

    def apply_logits(self, params: Params, x: jax.Array, precision: str = "f32") -> jax.Array:
        """Pure: (N, H, W, 3) images in [0, 1] -> (N, classes) logits, preprocessing included."""
        layer = self.logits_layer
        out = self.apply(params, self.preprocess(x), (layer,), precision)[layer]
        return out.reshape(out.shape[0], -1)


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


def darknet_imagenet_labels(cfg: C.Cfg) -> tuple[str, ...] | None:
    """Darknet's ImageNet-1k names (its own order) for a cfg whose softmax has 1000 classes, else None."""
    softmax = [s for s in cfg.layers if isinstance(s, C.Softmax)]
    if not softmax or int(np.prod(layer_shapes(cfg, upto=softmax[-1].index)[-1])) != 1000:
        return None
    return tuple(builtin_weights.labels_text(builtin_weights.DARKNET_1K_NAMES).splitlines())


def _model_shape(entry: Entry) -> tuple[int, ...]:
    shape = entry.file_shape
    if entry.name != "kernel":
        return shape
    return (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else (shape[1], shape[0])


def param_shapes(cfg: C.Cfg) -> dict[str, dict[str, tuple[int, ...]]]:
    """The shape of every parameter the cfg needs, in the model's layout ({layer key: {name: shape}})."""
    expected: dict[str, dict[str, tuple[int, ...]]] = {}
    for entry in file_layout(cfg):
        expected.setdefault(layer_key(entry.layer), {})[entry.name] = _model_shape(entry)
    return expected


def check_params(cfg: C.Cfg, params: Params, source: str) -> Params:
    """Every parameter the cfg needs, with the right shape, and nothing else (as float32 arrays)."""
    expected = param_shapes(cfg)
    problems = []
    for key in sorted(set(expected) | set(params)):
        want_layer, have_layer = expected.get(key, {}), params.get(key, {})
        for name in sorted(set(want_layer) | set(have_layer)):
            want, have = want_layer.get(name), have_layer.get(name)
            if want is None or have is None:
                problems.append(f"{'unexpected' if want is None else 'missing'} {key}/{name}")
            elif tuple(np.shape(have)) != want:
                problems.append(f"{key}/{name} has shape {tuple(np.shape(have))}, the cfg needs {want}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise WeightsError(f"{source}: parameters do not fit {cfg.source}: {shown}")
    return {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in params.items()}


def _load_weights_for(cfg: C.Cfg, weights: str | Path) -> Params:
    path = Path(weights)
    if path.suffix.lower() in (".h5", ".hdf5"):
        stored = converted.read_converted(path)
        if stored.kind != "darknet" or stored.architecture.strip() != cfg.text.strip():
            raise WeightsError(
                f"{path}: this converted file was made for a different architecture than {cfg.source}; "
                f"load it alone with load_model('{path}')"
            )
        return check_params(cfg, stored.params, str(path))
    params, _ = read_weights(path, cfg)
    return params


def load_model(
    name_or_path: str | Path, weights: str | Path | None = None, progress: zoo.Progress | None = None,
    preprocess: str | None = None, labels: str | Path | None = None,
) -> ModelBase:
    """Load a network by built-in name (``vgg-conv`` ...), cfg path, converted ``.h5`` or full Keras ``.h5`` file.

    ``weights``: a Darknet ``.weights`` file, a converted ``.h5``, a Keras weights ``.h5`` (with a built-in Keras
    architecture such as ``vgg-19``, or a full Keras model file as the architecture), or a zoo name; a built-in
    name with no weights fetches its official weights into the cache on first use (``progress(done, total)``
    follows the download). An ``.onnx`` file takes ``preprocess`` (caffe, torch, tf or raw) and ``labels`` (a
    label file). Parameters with NaN or infinite values are refused, naming the first such entry.
    """
    if Path(name_or_path).suffix.lower() == ".onnx":
        from jaxdream.onnx.model import load_onnx

        model = load_onnx(name_or_path, preprocess, labels)
        check_finite(model.params, str(name_or_path))
        return model
    model = _load_model(name_or_path, weights, progress)
    check_finite(model.params, str(weights or name_or_path))
    return model


def check_finite(params: Any, source: str) -> None:
    """One clear error for the first parameter with NaN or infinite values (a damaged or hand-edited file)."""
    for path, array in jax.tree_util.tree_leaves_with_path(params):
        if not np.isfinite(np.asarray(array)).all():
            where = "/".join(str(getattr(k, "key", k)) for k in path)
            raise WeightsError(f"{source}: parameter {where} has NaN or infinite values; the file is damaged")


def _load_model(name_or_path: str | Path, weights: str | Path | None, progress: zoo.Progress | None) -> ModelBase:
    from jaxdream import keras

    text = str(name_or_path)
    path = Path(text)
    if weights is not None and Path(weights).suffix.lower() in (".h5", ".hdf5") and keras.is_keras_file(weights):
        return keras.load_keras(weights, text)  # a Keras weights file with a built-in or full-model architecture
    if path.suffix.lower() in (".h5", ".hdf5") and weights is None:
        if keras.is_keras_file(path):
            return keras.load_keras(path)
        stored = converted.read_converted(path)
        if stored.kind == "keras":
            return keras.from_converted(stored, str(path))
        if stored.kind == "onnx":
            from jaxdream.onnx.model import from_converted

            return from_converted(stored, str(path))
        cfg = C.parse_cfg(stored.architecture, f"{path}:cfg")
        return Model(stored.name, cfg, check_params(cfg, stored.params, str(path)), stored.labels)
    entry = zoo.find(text)
    if entry is not None and not path.exists():
        cfg = C.parse_cfg(entry.cfg_text(), entry.name)
        name, labels = entry.name, entry.labels()
    else:
        cfg = C.load_cfg(path)
        name, labels = _darknet_name(path), darknet_imagenet_labels(cfg)
    if weights is None:
        if entry is None or path.exists():
            raise JaxdreamError(f"{text}: a cfg needs weights: pass a Darknet .weights or converted .h5 file")
        weights = zoo.fetch(entry, progress)
    elif (named := zoo.find(str(weights))) is not None and not Path(weights).exists():
        weights = zoo.fetch(named, progress)
    return Model(name, cfg, _load_weights_for(cfg, weights), labels)


def describe_only(name_or_path: str | Path) -> ModelBase:
    """A model to describe or plan, not to run: a .h5 loads whole; a cfg or built-in name needs no weights."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".h5", ".hdf5", ".onnx"):
        return load_model(path)
    entry = zoo.find(str(name_or_path))
    if entry is not None and not path.exists():
        return Model(entry.name, C.parse_cfg(entry.cfg_text(), entry.name), {})
    return Model(_darknet_name(path), C.load_cfg(path), {})


def model_from_bytes(cfg: C.Cfg, data: bytes, name: str = "model", source: str = "<weights>") -> Model:
    """A model from cfg + .weights bytes in memory (tests, random weights for benchmarks)."""
    params, _ = parse_weights(data, cfg, source)
    return Model(name, cfg, params)


def _darknet_name(path: Path) -> str:
    """Darknet's `basecfg`: the file name up to its first dot (used in output names)."""
    return path.name.split(".", 1)[0]


__all__ = ["Model", "check_params", "layer_key", "load_model", "model_from_bytes"]
