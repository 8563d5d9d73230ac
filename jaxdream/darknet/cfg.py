"""Parse Darknet .cfg text into typed, validated layer specs.

Darknet counts every section after ``[net]`` as a layer, from 0; the specs keep that index. Errors name the file,
the line and what would have been valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxdream.errors import CfgError

ACTIVATIONS = (
    "linear", "relu", "leaky", "logistic", "loggy", "tanh", "elu", "selu", "relie", "ramp", "relu6",
    "mish", "swish", "hardtan", "lhtan", "plse", "gelu", "hard_mish",
)
HEAD_TYPES = ("yolo", "region", "detection", "cost")


@dataclass(frozen=True)
class Net:
    width: int
    height: int
    channels: int
    line: int = 0


@dataclass(frozen=True)
class Layer:
    """Common fields: Darknet index and the line of the section header."""

    index: int
    line: int

    @property
    def kind(self) -> str:
        return _KIND_OF[type(self)]


@dataclass(frozen=True)
class Conv(Layer):
    filters: int
    size: int
    stride: int
    pad: int  # effective zero padding on each side
    groups: int
    batch_normalize: bool
    activation: str


@dataclass(frozen=True)
class MaxPool(Layer):
    size: int
    stride: int
    padding: int  # Darknet's total padding; the window origin is shifted by padding // 2


@dataclass(frozen=True)
class AvgPool(Layer):
    pass


@dataclass(frozen=True)
class Connected(Layer):
    output: int
    activation: str
    batch_normalize: bool


@dataclass(frozen=True)
class Softmax(Layer):
    groups: int
    temperature: float


@dataclass(frozen=True)
class Dropout(Layer):
    probability: float


@dataclass(frozen=True)
class Route(Layer):
    layers: tuple[int, ...]  # absolute indices
    groups: int
    group_id: int


@dataclass(frozen=True)
class Shortcut(Layer):
    source: int  # absolute index of the `from` layer
    activation: str
    alpha: float
    beta: float


@dataclass(frozen=True)
class Upsample(Layer):
    stride: int
    scale: float


@dataclass(frozen=True)
class Crop(Layer):
    crop_height: int
    crop_width: int
    noadjust: bool


@dataclass(frozen=True)
class Head(Layer):
    """A detection or cost head: parsed so the cfg loads, but it has no forward pass here."""

    head_type: str

    @property
    def kind(self) -> str:
        return self.head_type


@dataclass(frozen=True)
class Cfg:
    source: str  # file path or a name, for messages
    text: str
    net: Net
    layers: tuple[Layer, ...]

    def where(self, layer: Layer) -> str:
        return f"{self.source}:{layer.line}"


_KIND_OF: dict[type, str] = {
    Conv: "convolutional", MaxPool: "maxpool", AvgPool: "avgpool", Connected: "connected",
    Softmax: "softmax", Dropout: "dropout", Route: "route", Shortcut: "shortcut", Upsample: "upsample",
    Crop: "crop",
}

# Options Darknet reads for training or data augmentation: accepted, not used for inference.
_TRAINING_KEYS = {
    "net": (
        "batch subdivisions momentum decay learning_rate policy power max_batches steps scales step gamma "
        "burn_in angle saturation exposure hue aspect max_crop min_crop jitter mosaic flip letter_box "
        "random inputs time_steps adam B1 B2 eps notruth rate mini_batch max_chart_loss track "
        "label_smooth_eps optimized_memory workspace_size_limit_MB cutmix mixup blur gaussian_noise "
        "resize nms_kind sequential_subdivisions try_fix_nan loss_scale dynamic_minibatch "
        "adversarial_lr attention center contrastive unsupervised"
    ),
    "convolutional": "binary xnor bin_output flipped dot stopbackward dontload dontloadscales learning_rate_scale",
    "connected": "dontload dontloadscales learning_rate_scale",
    "maxpool": "maxpool_depth out_channels antialiasing",
    "dropout": "dropblock dropblock_size_rel dropblock_size_abs",
    "crop": "flip exposure saturation angle shift",
    "shortcut": "weights_type weights_normalization",
    "softmax": "tree spatial noloss",
    "route": "stopbackward",
    "yolo": (
        "mask anchors classes num jitter ignore_thresh truth_thresh random scale_x_y iou_thresh "
        "cls_normalizer iou_normalizer iou_loss nms_kind beta_nms max_delta counters_per_class "
        "label_smooth_eps resize new_coords objectness_smooth focal_loss max map"
    ),
    "region": (
        "anchors classes coords num softmax jitter rescore thresh classfix absolute random bias_match "
        "object_scale noobject_scale class_scale coord_scale log tree map max"
    ),
    "detection": (
        "classes coords rescore side num softmax sqrt jitter object_scale noobject_scale class_scale "
        "coord_scale forced random reorg"
    ),
    "cost": "type scale ratio noobject_scale thresh",
}

_Reader = Callable[[str], Any]


INT_LIMIT = 2**31 - 1  # Darknet reads ints as C ints; anything larger is a typo or an attack, never a network


def _int(text: str) -> int:
    value = int(text.strip())
    if abs(value) > INT_LIMIT:
        raise ValueError("out of range")
    return value


def _float(text: str) -> float:
    value = float(text.strip())
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def _str(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("empty")
    return value


def _ints(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty list")
    return tuple(_int(p) for p in parts)


_TYPE_WORDS = {
    _int: f"an integer of at most {INT_LIMIT} in size", _float: "a number", _str: "a word",
    _ints: f"a comma-separated list of integers of at most {INT_LIMIT} in size",
}

# Keys each section understands for inference, with their reader.
_SCHEMA: dict[str, dict[str, _Reader]] = {
    "net": {"width": _int, "height": _int, "channels": _int},
    "convolutional": {
        "filters": _int, "size": _int, "stride": _int, "pad": _int, "padding": _int, "groups": _int,
        "batch_normalize": _int, "activation": _str,
    },
    "maxpool": {"size": _int, "stride": _int, "padding": _int},
    "avgpool": {},
    "connected": {"output": _int, "activation": _str, "batch_normalize": _int},
    "softmax": {"groups": _int, "temperature": _float},
    "dropout": {"probability": _float},
    "route": {"layers": _ints, "groups": _int, "group_id": _int},
    "shortcut": {"from": _ints, "activation": _str, "alpha": _float, "beta": _float},
    "upsample": {"stride": _int, "scale": _float},
    "crop": {"crop_height": _int, "crop_width": _int, "noadjust": _int},
    **{head: {} for head in HEAD_TYPES},
}
_SECTION_ALIASES = {"network": "net", "conv": "convolutional", "max": "maxpool", "avg": "avgpool", "soft": "softmax"}


@dataclass
class _Section:
    name: str
    line: int
    options: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)


class _Reading:
    """Typed option access for one section, with errors that point at the right line."""

    def __init__(self, source: str, section: _Section):
        self.source, self.section = source, section

    def fail(self, message: str, line: int | None = None) -> CfgError:
        return CfgError(f"{self.source}:{line or self.section.line}: [{self.section.name}] {message}")

    def get(self, key: str, default: Any) -> Any:
        if key not in self.section.options:
            return default
        text, line = self.section.options[key]
        reader = _SCHEMA[self.section.name][key]
        try:
            return reader(text)
        except ValueError:
            raise self.fail(f"{key}={text!r} is not {_TYPE_WORDS[reader]}", line) from None

    def positive(self, key: str, default: int) -> int:
        value = self.get(key, default)
        if value < 1:
            raise self.fail(f"{key}={value} must be at least 1", self._line(key))
        return value

    def activation(self, default: str) -> str:
        value = self.get("activation", default)
        if value not in ACTIVATIONS:
            raise self.fail(
                f"activation={value!r} is unknown; valid: {', '.join(ACTIVATIONS)}", self._line("activation")
            )
        return value

    def _line(self, key: str) -> int:
        return self.section.options.get(key, ("", self.section.line))[1]


def _split_sections(text: str, source: str) -> list[_Section]:
    sections: list[_Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"{source}:{number}: malformed section header {line!r}; write it as [name]")
            name = line[1:-1].strip().lower()
            name = _SECTION_ALIASES.get(name, name)
            if name not in _SCHEMA:
                raise CfgError(
                    f"{source}:{number}: unknown section [{name}]; valid sections: {', '.join(sorted(_SCHEMA))}"
                )
            sections.append(_Section(name, number))
            continue
        if not sections:
            raise CfgError(f"{source}:{number}: option {line!r} before any [section]; the file must start with [net]")
        key, sep, value = line.partition("=")
        key = key.strip()
        section = sections[-1]
        if not sep or not key:
            raise CfgError(f"{source}:{number}: expected key=value in [{section.name}], found {line!r}")
        known = _SCHEMA[section.name]
        if key not in known and key not in _TRAINING_KEYS.get(section.name, "").split():
            valid = sorted(known) + sorted(_TRAINING_KEYS.get(section.name, "").split())
            raise CfgError(
                f"{source}:{number}: unknown key {key!r} in [{section.name}]; valid keys: {', '.join(valid) or 'none'}"
            )
        if key in known:
            section.options[key] = (value.strip(), number)
    return sections


def _resolve(reading: _Reading, key: str, offset: int, index: int) -> int:
    absolute = index + offset if offset < 0 else offset
    if not 0 <= absolute < index:
        raise reading.fail(
            f"{key}={offset} points at layer {absolute}, which does not exist before layer {index}; "
            f"use a negative offset (-1 .. -{index}) or an absolute index 0 .. {index - 1}",
            reading._line(key),
        )
    return absolute


def _build_layer(reading: _Reading, index: int) -> Layer:
    name, line = reading.section.name, reading.section.line
    if name == "convolutional":
        size = reading.positive("size", 1)
        pad = size // 2 if reading.get("pad", 0) else reading.get("padding", 0)
        if pad < 0:
            raise reading.fail(f"padding={pad} must not be negative", reading._line("padding"))
        return Conv(
            index, line, filters=reading.positive("filters", 1), size=size, stride=reading.positive("stride", 1),
            pad=pad, groups=reading.positive("groups", 1), batch_normalize=bool(reading.get("batch_normalize", 0)),
            activation=reading.activation("logistic"),
        )
    if name == "maxpool":
        stride = reading.positive("stride", 1)
        size = reading.positive("size", stride)
        padding = reading.get("padding", size - 1)
        if padding < 0:
            raise reading.fail(f"padding={padding} must not be negative", reading._line("padding"))
        return MaxPool(index, line, size=size, stride=stride, padding=padding)
    if name == "avgpool":
        return AvgPool(index, line)
    if name == "connected":
        return Connected(
            index, line, output=reading.positive("output", 1), activation=reading.activation("logistic"),
            batch_normalize=bool(reading.get("batch_normalize", 0)),
        )
    if name == "softmax":
        temperature = reading.get("temperature", 1.0)
        if temperature <= 0:
            raise reading.fail(f"temperature={temperature} must be positive", reading._line("temperature"))
        return Softmax(index, line, groups=reading.positive("groups", 1), temperature=temperature)
    if name == "dropout":
        probability = reading.get("probability", 0.5)
        if not 0 <= probability < 1:
            raise reading.fail(f"probability={probability} must be in [0, 1)", reading._line("probability"))
        return Dropout(index, line, probability=probability)
    if name == "route":
        if "layers" not in reading.section.options:
            raise reading.fail("needs layers=..., e.g. layers=-1,-4")
        sources = tuple(_resolve(reading, "layers", o, index) for o in reading.get("layers", ()))
        groups = reading.positive("groups", 1)
        group_id = reading.get("group_id", 0)
        if not 0 <= group_id < groups:
            raise reading.fail(f"group_id={group_id} must be in 0 .. {groups - 1}", reading._line("group_id"))
        return Route(index, line, layers=sources, groups=groups, group_id=group_id)
    if name == "shortcut":
        offsets = reading.get("from", None)
        if offsets is None or len(offsets) != 1:
            raise reading.fail("needs exactly one from=..., e.g. from=-3", reading._line("from"))
        return Shortcut(
            index, line, source=_resolve(reading, "from", offsets[0], index), activation=reading.activation("linear"),
            alpha=reading.get("alpha", 1.0), beta=reading.get("beta", 1.0),
        )
    if name == "upsample":
        stride = reading.get("stride", 2)
        if stride < 1:
            raise reading.fail(f"stride={stride} is not supported; use a positive stride", reading._line("stride"))
        return Upsample(index, line, stride=stride, scale=reading.get("scale", 1.0))
    if name == "crop":
        return Crop(
            index, line, crop_height=reading.positive("crop_height", 1), crop_width=reading.positive("crop_width", 1),
            noadjust=bool(reading.get("noadjust", 0)),
        )
    return Head(index, line, head_type=name)


def parse_cfg(text: str, source: str = "<cfg>") -> Cfg:
    """Parse cfg text; ``source`` (a path or name) appears in every error message."""
    sections = _split_sections(text, source)
    if not sections or sections[0].name != "net":
        raise CfgError(f"{source}:1: a Darknet cfg must start with a [net] section")
    net_reading = _Reading(source, sections[0])
    net = Net(
        width=net_reading.positive("width", 224), height=net_reading.positive("height", 224),
        channels=net_reading.positive("channels", 3), line=sections[0].line,
    )
    layers = []
    for index, section in enumerate(sections[1:]):
        if section.name == "net":
            raise CfgError(f"{source}:{section.line}: a second [net] section; only the first section may be [net]")
        layers.append(_build_layer(_Reading(source, section), index))
    if not layers:
        raise CfgError(f"{source}: no layers after [net]")
    return Cfg(source=source, text=text, net=net, layers=tuple(layers))


def load_cfg(path: str | Path) -> Cfg:
    """Read and parse a .cfg file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CfgError(f"{path}: cannot read the cfg file ({err.strerror or err}); check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CfgError(f"{path}: not a text file (not UTF-8); a Darknet .cfg is plain text") from None
    return parse_cfg(text, str(path))
