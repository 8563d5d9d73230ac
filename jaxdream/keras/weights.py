"""Reading a Keras HDF5 file's weights: {layer name: {weight name: array}} as Keras stores them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from jaxdream.errors import JaxdreamError, WeightsError


@contextlib.contextmanager
def reading(source: str) -> Iterator[None]:
    """Whatever a damaged or hand-edited file makes the reader trip over becomes one error naming the file."""
    try:
        yield
    except JaxdreamError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as err:
        raise WeightsError(f"{source}: not a Keras model jaxdream can read ({type(err).__name__}: {err})") from None



def read_weight_groups(group: h5py.Group, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
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



def is_keras_file(path: str | Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "layer_names" in f.attrs or "model_weights" in f
    except OSError:
        return False




def layer_names(group: h5py.Group) -> list[str]:
    """The layer names a Keras weights group lists, in order."""
    return [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
