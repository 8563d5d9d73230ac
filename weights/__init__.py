"""The model zoo's data: jaxdream's own built-in architecture definitions and where their official weights live.

Architectures are written here as Darknet cfg text generated from short layer plans, so a built-in name works
anywhere a cfg path does. Each entry records the official weights URL and the byte size its cfg implies.
"""

from __future__ import annotations

from importlib import resources

# VGG stages: (filters, convolutions) before each 2x2/2 max-pool.
_VGG16 = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
_VGG19 = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
_JNET = ((32, 2), (64, 2), (128, 2), (256, 2), (512, 2), (1024, 2))


def _net(size: int) -> str:
    return f"[net]\nbatch=1\nsubdivisions=1\nwidth={size}\nheight={size}\nchannels=3\n"


def _conv_stack(stages: tuple[tuple[int, int], ...], activation: str) -> str:
    parts = []
    for filters, count in stages:
        parts += [f"\n[convolutional]\nfilters={filters}\nsize=3\nstride=1\npad=1\nactivation={activation}\n"] * count
        parts.append("\n[maxpool]\nsize=2\nstride=2\n")
    return "".join(parts)


def _vgg_classifier(stages: tuple[tuple[int, int], ...]) -> str:
    """Darknet's VGG classifier: a centred 224 crop of a 256 input (mapped to [-1, 1]), convs, 3 connected."""
    head = "".join(
        "\n[connected]\noutput=4096\nactivation=relu\n\n[dropout]\nprobability=.5\n" for _ in range(2)
    )
    return (
        _net(256) + "\n[crop]\ncrop_height=224\ncrop_width=224\n" + _conv_stack(stages, "relu") + head
        + "\n[connected]\noutput=1000\nactivation=linear\n\n[softmax]\ngroups=1\n"
    )


ARCHITECTURES: dict[str, str] = {
    "vgg-conv": _net(224) + _conv_stack(_VGG16, "relu"),
    "jnet-conv": _net(224) + _conv_stack(_JNET, "leaky"),
    "vgg-16": _vgg_classifier(_VGG16),
}

_DARKNET_SITE = "https://pjreddie.com/media/files/"
OFFICIAL_WEIGHTS: dict[str, str] = {name: f"{_DARKNET_SITE}{name}.weights" for name in ARCHITECTURES}
DARKNET_1K_NAMES = "imagenet1k-darknet.names"  # the first 1000 lines of Darknet's imagenet.shortnames.list
DARKNET_LABELS = {"vgg-16": DARKNET_1K_NAMES}
KERAS_1K_NAMES = "imagenet1k-keras.names"  # Keras/PyTorch order (sorted WordNet ids), from imagenet_class_index.json


def labels_text(filename: str) -> str:
    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
