"""Read and write Darknet .weights files, checked byte for byte against the cfg.

File layout: int32 major, minor, revision; ``seen`` as uint64 when major*10+minor >= 2 (else int32); then, for
every weighted layer in cfg order, little-endian float32 arrays. Convolutional: biases[n], (scales, rolling_mean,
rolling_variance)[n] if batch-normalised, weights[n, c/groups, k, k]. Connected: biases[out], weights[out, in],
then (scales, rolling_mean, rolling_variance)[out] if batch-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxdream.darknet import cfg as C
from jaxdream.darknet.shapes import input_shapes
from jaxdream.errors import WeightsError
from jaxdream.files import read_user_file, write_atomically

Params = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Header:
    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def wide_seen(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def transposed(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return 20 if self.wide_seen else 16


@dataclass(frozen=True)
class Entry:
    """One array in file order: its layer, our parameter name and its shape as stored in the file."""

    layer: int
    name: str
    file_shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return int(np.prod(self.file_shape))


def layer_key(index: int) -> str:
    return f"layer_{index}"


def file_layout(cfg: C.Cfg) -> list[Entry]:
    """Every array of the weights file in order, derived from the cfg alone (each layer type lists its own)."""
    return [Entry(layer.index, name, shape)
            for layer, incoming in zip(cfg.layers, input_shapes(cfg), strict=True)
            for name, shape in layer.arrays(incoming)]


def parameter_count(cfg: C.Cfg) -> int:
    return sum(entry.count for entry in file_layout(cfg))


def expected_file_sizes(cfg: C.Cfg) -> tuple[int, int]:
    """Byte sizes a matching file can have: with the 16-byte and with the 20-byte header."""
    body = 4 * parameter_count(cfg)
    return 16 + body, 20 + body


def _to_model_layout(entry: Entry, array: np.ndarray, transposed: bool) -> np.ndarray:
    if entry.name != "kernel":
        return array
    if len(entry.file_shape) == 4:
        return array.reshape(entry.file_shape).transpose(2, 3, 1, 0)  # OIHW -> HWIO
    out, inp = entry.file_shape
    if transposed:
        return array.reshape(inp, out)
    return array.reshape(out, inp).T  # Darknet (out, in) -> Dense (in, out)


def _to_file_layout(entry: Entry, array: np.ndarray) -> np.ndarray:
    if entry.name != "kernel":
        return array
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array.T


def parse_header(data: bytes, source: str) -> Header:
    if len(data) < 16:
        raise WeightsError(f"{source}: {len(data)} bytes is too short for a Darknet weights header (16 or 20 bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(data[:12], "<i4"))
    header = Header(major, minor, revision, 0)
    if header.wide_seen:
        if len(data) < 20:
            raise WeightsError(f"{source}: header says version {major}.{minor} (20-byte header) but the file is cut")
        seen = int(np.frombuffer(data[12:20], "<u8")[0])
    else:
        seen = int(np.frombuffer(data[12:16], "<i4")[0])
    return Header(major, minor, revision, seen)


def parse_weights(data: bytes, cfg: C.Cfg, source: str = "<weights>") -> tuple[Params, Header]:
    """Split the bytes of a .weights file into a parameter tree (Flax layouts: HWIO kernels, (in, out) dense)."""
    header = parse_header(data, source)
    offset = header.nbytes
    params: Params = {}
    for entry in file_layout(cfg):
        need = 4 * entry.count
        if offset + need > len(data):
            layer = cfg.layers[entry.layer]
            raise WeightsError(
                f"{source}: file ends inside layer {entry.layer} ({layer.kind}, {cfg.where(layer)}): its {entry.name} "
                f"needs {need} bytes at offset {offset}, only {len(data) - offset} left. The file holds "
                f"{len(data)} bytes, the cfg needs {header.nbytes + 4 * parameter_count(cfg)}; "
                "is it the weights file for this cfg, and complete?"
            )
        array = np.frombuffer(data, "<f4", entry.count, offset).astype(np.float32)
        offset += need
        params.setdefault(layer_key(entry.layer), {})[entry.name] = _to_model_layout(entry, array, header.transposed)
    if offset != len(data):
        raise WeightsError(
            f"{source}: {len(data) - offset} bytes left over after the last layer: the cfg {cfg.source} needs "
            f"{offset} bytes, the file has {len(data)}. Is it the weights file for this cfg?"
        )
    return params, header


def read_weights(path: str | Path, cfg: C.Cfg) -> tuple[Params, Header]:
    """Read a Darknet .weights file for ``cfg``."""
    path = Path(path)
    need = 20 + 4 * parameter_count(cfg)  # the widest header (a 64-bit seen count) and every parameter
    data = read_user_file(path, "the weights file", need, WeightsError,
                          f"the cfg {cfg.source} needs at most {need:,}: is it the weights file for this cfg?")
    return parse_weights(data, cfg, str(path))


def weights_bytes(cfg: C.Cfg, params: Params, header: Header = Header()) -> bytes:
    """The bytes of a .weights file holding ``params`` (the inverse of :func:`parse_weights`)."""
    if header.transposed:
        raise WeightsError("writing the transposed (version > 1000) weights layout is not supported")
    parts = [np.array([header.major, header.minor, header.revision], "<i4").tobytes()]
    parts.append(np.array([header.seen], "<u8" if header.wide_seen else "<i4").tobytes())
    for entry in file_layout(cfg):
        array = np.asarray(params[layer_key(entry.layer)][entry.name], np.float32)
        parts.append(np.ascontiguousarray(_to_file_layout(entry, array)).astype("<f4").tobytes())
    return b"".join(parts)


def write_weights(path: str | Path, cfg: C.Cfg, params: Params, header: Header = Header()) -> Path:
    """Write a .weights file with the one atomic writer (files.write_atomically)."""
    return write_atomically(path, weights_bytes(cfg, params, header), "the weights", WeightsError)


def random_weights_bytes(cfg: C.Cfg, seed: int, bias_std: float = 0.01) -> bytes:
    """A .weights file of random weights by the golden README's rule (He-normal kernels, PCG64 ``seed``).

    For the cfgs in that README the bytes (and so the sha256) equal the files Darknet's golden vectors used.
    """
    rng = np.random.default_rng(seed)
    parts = [np.array([0, 2, 0], "<i4").tobytes(), np.array([0], "<u8").tobytes()]
    for entry in file_layout(cfg):
        n = entry.file_shape[0]
        if entry.name == "kernel":
            fan_in = entry.count // n
            array = rng.standard_normal(entry.count) * np.sqrt(2.0 / fan_in)
        elif entry.name == "bias":
            bn = getattr(cfg.layers[entry.layer], "batch_normalize", False)
            array = rng.standard_normal(n) * 0.1 if bn else rng.standard_normal(n) * bias_std + 0.0
        elif entry.name == "scale":
            array = 1.0 + 0.1 * rng.standard_normal(n)
        elif entry.name == "mean":
            array = 0.1 * rng.standard_normal(n)
        else:
            array = rng.uniform(0.5, 1.5, n)
        parts.append(array.astype("<f4").tobytes())
    return b"".join(parts)
