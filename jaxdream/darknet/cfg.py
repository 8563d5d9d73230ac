"""Parse Darknet .cfg text into typed, validated layer specs (the layer types themselves live in layers.py).

Darknet counts every section after ``[net]`` as a layer, from 0; the specs keep that index. Errors name the file,
the line and what would have been valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxdream.darknet.layers import (
    ACTIVATIONS,
    HEAD_TRAINING_KEYS,
    LAYER_TYPES,
    AvgPool,
    Connected,
    Conv,
    Crop,
    Dropout,
    Head,
    Layer,
    MaxPool,
    Net,
    Route,
    Shortcut,
    Softmax,
    Upsample,
    training_keys,
)
from jaxdream.darknet.reading import Reader, Reading, Section, read_int
from jaxdream.errors import CfgError
from jaxdream.files import read_user_file

MAX_CFG_BYTES = 1 << 20  # the largest Darknet cfgs are ~30 kB; /dev/zero or a video given by mistake is refused

HEAD_TYPES = tuple(HEAD_TRAINING_KEYS)
NET_TRAINING_KEYS = (
    "batch subdivisions momentum decay learning_rate policy power max_batches steps scales step gamma "
    "burn_in angle saturation exposure hue aspect max_crop min_crop jitter mosaic flip letter_box "
    "random inputs time_steps adam B1 B2 eps notruth rate mini_batch max_chart_loss track "
    "label_smooth_eps optimized_memory workspace_size_limit_MB cutmix mixup blur gaussian_noise "
    "resize nms_kind sequential_subdivisions try_fix_nan loss_scale dynamic_minibatch "
    "adversarial_lr attention center contrastive unsupervised"
)
NET_KEYS = {"width": read_int, "height": read_int, "channels": read_int}
_SECTION_ALIASES = {"network": "net", "conv": "convolutional", "max": "maxpool", "avg": "avgpool", "soft": "softmax"}


def _shown(line: str) -> str:
    """A cfg line for a message, cut short (a JSON architecture read as a cfg is one enormous line)."""
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _sections() -> list[str]:
    return ["net", *LAYER_TYPES]


def _keys(section: str) -> dict[str, Reader]:
    return NET_KEYS if section == "net" else LAYER_TYPES[section].KEYS


def _training_keys(section: str) -> list[str]:
    return NET_TRAINING_KEYS.split() if section == "net" else training_keys(section)


@dataclass(frozen=True)
class Cfg:
    source: str  # file path or a name, for messages
    text: str
    net: Net
    layers: tuple[Layer, ...]

    def where(self, layer: Layer) -> str:
        return f"{self.source}:{layer.line}"


def _split_sections(text: str, source: str) -> list[Section]:
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"{source}:{number}: malformed section header {_shown(line)}; write it as [name]")
            name = line[1:-1].strip().lower()
            name = _SECTION_ALIASES.get(name, name)
            if name not in _sections():
                raise CfgError(
                    f"{source}:{number}: unknown section [{name}]; valid sections: {', '.join(sorted(_sections()))}"
                )
            sections.append(Section(name, number))
            continue
        if not sections:
            raise CfgError(f"{source}:{number}: option {_shown(line)} before any [section]; the file must start with "
                           "[net]")
        key, sep, value = line.partition("=")
        key = key.strip()
        section = sections[-1]
        if not sep or not key:
            raise CfgError(f"{source}:{number}: expected key=value in [{section.name}], found {_shown(line)}")
        known, training = _keys(section.name), _training_keys(section.name)
        if key not in known and key not in training:
            valid = sorted(known) + sorted(training)
            raise CfgError(
                f"{source}:{number}: unknown key {key!r} in [{section.name}]; valid keys: {', '.join(valid) or 'none'}"
            )
        if key in known:
            section.options[key] = (value.strip(), number)
    return sections


def parse_cfg(text: str, source: str = "<cfg>") -> Cfg:
    """Parse cfg text; ``source`` (a path or name) appears in every error message."""
    sections = _split_sections(text, source)
    if not sections or sections[0].name != "net":
        raise CfgError(f"{source}:1: a Darknet cfg must start with a [net] section")
    net_reading = Reading(source, sections[0], NET_KEYS)
    net = Net(
        width=net_reading.positive("width", 224), height=net_reading.positive("height", 224),
        channels=net_reading.positive("channels", 3), line=sections[0].line,
    )
    layers = []
    for index, section in enumerate(sections[1:]):
        if section.name == "net":
            raise CfgError(f"{source}:{section.line}: a second [net] section; only the first section may be [net]")
        layer_type = LAYER_TYPES[section.name]
        layers.append(layer_type.parse(Reading(source, section, layer_type.KEYS), index))
    if not layers:
        raise CfgError(f"{source}: no layers after [net]")
    return Cfg(source=source, text=text, net=net, layers=tuple(layers))


def load_cfg(path: str | Path) -> Cfg:
    """Read and parse a .cfg file."""
    path = Path(path)
    raw = read_user_file(path, "the cfg file", MAX_CFG_BYTES, CfgError,
                         "a Darknet .cfg is a short text file; check the path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CfgError(f"{path}: not a text file (not UTF-8); a Darknet .cfg is plain text") from None
    return parse_cfg(text, str(path))


__all__ = ["ACTIVATIONS", "HEAD_TYPES", "AvgPool", "Cfg", "Connected", "Conv", "Crop", "Dropout", "Head", "Layer",
           "MaxPool", "Net", "Route", "Shortcut", "Softmax", "Upsample", "load_cfg", "parse_cfg"]
