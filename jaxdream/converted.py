"""jaxdream's own HDF5 model file: the cfg text, every parameter (model layout) and where they came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from jaxdream.errors import WeightsError
from jaxdream.files import check_user_file, hdf5_bytes, write_atomically
from jaxdream.protocol import Params, flat_params

FORMAT = "jaxdream-model"
VERSION = 1


@dataclass(frozen=True)
class Converted:
    """``architecture``: the backend's own text (kind 'darknet': the cfg; 'keras', 'onnx': JSON). ``params`` is
    the backend's tree when written and flat ({'layer/name': array}) when read: the backend rebuilds its tree."""

    name: str
    architecture: str
    params: Params
    source_sha256: str
    labels: tuple[str, ...] | None
    kind: str = "darknet"


def write_converted(path: str | Path, converted: Converted) -> None:
    """Write atomically: a temp file in the same folder, renamed when complete."""
    def fill(f: h5py.File) -> None:
        f.attrs.update({"format": FORMAT, "version": VERSION, "name": converted.name, "kind": converted.kind,
                        "architecture": converted.architecture, "source_sha256": converted.source_sha256})
        if converted.labels is not None:
            f.create_dataset("labels", data=np.array(converted.labels, dtype=h5py.string_dtype()))
        group = f.create_group("params")
        for path, array in flat_params(converted.params).items():
            group.create_dataset(path, data=np.asarray(array, np.float32))

    write_atomically(path, hdf5_bytes(fill), "the converted model", WeightsError)


def check_stored_here(dataset: h5py.Dataset, path: Path, entry: str) -> None:
    """Refuse a dataset whose bytes live outside the file: a virtual dataset (mapped from other files) or external
    storage (raw bytes in a file it names) would make reading it read whatever file a hand-edited entry points at.
    """
    if dataset.is_virtual or dataset.external:
        how = "a virtual dataset" if dataset.is_virtual else "stored in an external file"
        raise WeightsError(f"{path}: the entry {entry!r} is {how}, not data in this file; jaxdream writes every "
                           "parameter inside the file: convert the model again")


def read_converted(path: str | Path) -> Converted:
    """Read a file written by :func:`write_converted`; anything else gets a clear error."""
    path = Path(path)
    check_user_file(path, "the model file", WeightsError)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise WeightsError(
                    f"{path}: not a jaxdream model file (no format={FORMAT!r} attribute); make one with "
                    "`jaxdream weights convert CFG WEIGHTS -o FILE.h5`"
                )
            version = f.attrs["version"]
            if not isinstance(version, int | np.integer) or version < 1:
                raise WeightsError(f"{path}: format version {version!r} is not a version jaxdream wrote")
            if version > VERSION:
                raise WeightsError(f"{path}: written by a newer jaxdream (format version {version})")
            kind = str(f.attrs.get("kind", "darknet"))
            params: dict[str, np.ndarray] = {}

            def keep(entry: str, item: h5py.HLObject) -> None:
                if isinstance(item, h5py.Dataset):
                    check_stored_here(item, path, f"params/{entry}")
                    params[entry] = np.asarray(item[()], np.float32)

            f["params"].visititems(keep)
            if "labels" in f:
                check_stored_here(f["labels"], path, "labels")
            labels = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in f["labels"][()]) \
                if "labels" in f else None
            return Converted(str(f.attrs["name"]), str(f.attrs["architecture"]), params, str(f.attrs["source_sha256"]),
                             labels, kind)
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as err:
        raise WeightsError(f"{path}: cannot read as a jaxdream model file ({type(err).__name__}: {err})") from None
