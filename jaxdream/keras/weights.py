"""Reading a Keras HDF5 file's weights: {layer name: {weight name: array}} as Keras stores them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import jax
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



MAX_PARAMETERS = 2**31  # 8 GiB of float32, 50x VGG-19: a larger declared total is a hand-edited file


def weight_datasets(group: h5py.Group, names: list[str]) -> dict[str, dict[str, h5py.Dataset]]:
    """{layer: {weight: dataset}} as the file lists them; nothing is read yet."""
    datasets: dict[str, dict[str, h5py.Dataset]] = {}
    for name in names:
        if name not in group:
            continue
        layer_group = group[name]
        found = {}
        for weight_name in layer_group.attrs.get("weight_names", []):
            weight_name = weight_name.decode() if isinstance(weight_name, bytes) else str(weight_name)
            dataset = layer_group[weight_name]
            if not isinstance(dataset, h5py.Dataset):
                raise TypeError(f"{name}/{weight_name} is not a dataset")
            found[weight_name.split("/")[-1].split(":")[0]] = dataset
        datasets[name] = found
    return datasets


def read_weight_groups(group: h5py.Group, names: list[str], expected: Mapping[str, tuple[int, ...]], source: str,
                       target: str) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of the layers ``names``, once their declared shapes fit ``expected`` ({'layer/weight': shape})
    and their total is bounded: a hand-edited shape is refused before anything of that size is allocated."""
    from jaxdream.converted import check_stored_here
    from jaxdream.protocol import check_params

    datasets = weight_datasets(group, names)
    declared = {f"{layer}/{weight}": jax.ShapeDtypeStruct(dataset.shape, np.float32)
                for layer, found in datasets.items() for weight, dataset in found.items()}
    total = sum(int(np.prod(s.shape, dtype=object)) for s in declared.values())
    if total > MAX_PARAMETERS:
        raise WeightsError(f"{source}: the weights declare {total:,} values, more than the {MAX_PARAMETERS:,} "
                           "jaxdream reads; the file is damaged or not a Keras weights file")
    check_params(expected, declared, source, target)
    weights: dict[str, dict[str, np.ndarray]] = {}
    for layer, found in datasets.items():
        for dataset in found.values():
            check_stored_here(dataset, Path(source), dataset.name)
        weights[layer] = {weight: np.asarray(dataset, np.float32) for weight, dataset in found.items()}
    return weights



def is_keras_file(path: str | Path) -> bool:
    from jaxdream.files import check_user_file

    check_user_file(path, "the model file", WeightsError)
    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "layer_names" in f.attrs or "model_weights" in f
    except OSError:
        return False




def layer_names(group: h5py.Group) -> list[str]:
    """The layer names a Keras weights group lists, in order."""
    return [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
