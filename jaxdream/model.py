"""The one place that resolves a name or path to a model of the right backend (Darknet, Keras, ONNX)."""

from __future__ import annotations

from pathlib import Path

from jaxdream import converted
from jaxdream.darknet import model as darknet
from jaxdream.darknet import zoo
from jaxdream.errors import JaxdreamError, WeightsError
from jaxdream.keras import model as keras
from jaxdream.keras.weights import is_keras_file
from jaxdream.onnx import model as onnx
from jaxdream.protocol import Model

HDF5 = (".h5", ".hdf5")
FROM_CONVERTED = {"darknet": darknet.from_converted, "keras": keras.from_converted, "onnx": onnx.from_converted}


def load_model(
    name_or_path: str | Path, weights: str | Path | None = None, progress: zoo.Progress | None = None,
    preprocess: str | None = None, labels: str | Path | None = None,
) -> Model:
    """Load a network by built-in name (``vgg-conv`` ...), cfg path, converted ``.h5``, Keras ``.h5`` or ``.onnx``.

    ``weights``: a Darknet ``.weights`` file, a converted ``.h5``, a Keras weights ``.h5`` (with a built-in Keras
    architecture such as ``vgg-19``, or a full Keras model file as the architecture), or a zoo name; a built-in
    name with no weights fetches its official weights into the cache on first use (``progress(done, total)``
    follows the download). An ``.onnx`` file takes ``preprocess`` (caffe, torch, tf or raw) and ``labels`` (a
    label file). ``weights`` "-" (as on the command line) means the model carries its own. Every backend checks
    its parameters against the network's expected tree and refuses NaN or
    infinite values, naming the entry.
    """
    if weights is not None and str(weights) == "-":  # a model that carries its own weights (.h5, .onnx)
        weights = None
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return onnx.load_onnx(path, preprocess, labels)
    if weights is not None and Path(weights).suffix.lower() in HDF5 and is_keras_file(weights):
        return keras.load_keras(weights, str(name_or_path))  # a Keras weights file with its architecture
    if suffix in HDF5 and weights is None:
        return keras.load_keras(path) if is_keras_file(path) else from_converted_file(path)
    return darknet.load(name_or_path, weights, progress)


def from_converted_file(path: str | Path) -> Model:
    """A model from jaxdream's own one-file ``.h5``, by the backend its ``kind`` names."""
    stored = converted.read_converted(path)
    if stored.kind not in FROM_CONVERTED:
        raise WeightsError(f"{path}: a converted model of kind {stored.kind!r}, which this jaxdream does not know")
    model = FROM_CONVERTED[stored.kind](stored, str(path))
    if stored.labels is not None:
        try:
            classes = model.num_classes
        except JaxdreamError:  # not a classifier: its labels are never used
            classes = len(stored.labels)
        if len(stored.labels) != classes:
            raise WeightsError(f"{path}: the entry 'labels' lists {len(stored.labels)} names for a model with "
                               f"{classes} classes; the file was edited or damaged: convert the model again")
    return model


def describe_only(name_or_path: str | Path, preprocess: str | None = None) -> Model:
    """A model to describe or plan, not to run: a .h5 or .onnx loads whole (an .onnx with ``preprocess``); a cfg or
    built-in name needs no weights."""
    if Path(name_or_path).suffix.lower() in (*HDF5, ".onnx"):
        return load_model(name_or_path, preprocess=preprocess)
    return darknet.architecture(name_or_path)


__all__ = ["Model", "describe_only", "load_model"]
