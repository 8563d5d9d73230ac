"""The model zoo's data: jaxdream's own built-in architecture definitions, where their official weights live, and
the one bundled model.

Architectures are written here as Darknet cfg text generated from short layer plans, so a built-in name works
anywhere a cfg path does. Each entry records the official weights URL and the byte size its cfg implies. The bundled
model (Tiny Darknet, ``tiny``) and sample photo ship inside the package (SOURCES.md: origin, licence, sha256), so a
fresh install dreams offline.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

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


def data_path(filename: str) -> Path:
    """A file shipped in this package (a regular install and an editable one both keep it on disk)."""
    return Path(str(resources.files(__name__).joinpath(filename)))


BUNDLED_MODEL = "tiny"  # Tiny Darknet: an ImageNet-1k classifier, 4.2 MB, public domain
SAMPLE_IMAGE = data_path("dog.jpg")  # Darknet's own sample photo
# Files shipped in the package: name -> sha256, checked once when the bundled model is first loaded in a process.
BUNDLED_FILES = {
    "tiny.cfg": "54732dd230c45c22b5a6fe392274d1cbd9e6147bf6640fe76559d5f4bc3c41bf",
    "tiny.weights": "f1c3fe6b9bab9af69ae2a090682df3e5b9d83accba69551315f030ce1b37ea81",
    "dog.jpg": "5a9522051c3cec2bbd2f6323fccba32e8fbf3ddcc2b3e2fd46b04c720bc6f866",
}

ARCHITECTURES: dict[str, str] = {
    "vgg-conv": _net(224) + _conv_stack(_VGG16, "relu"),
    "jnet-conv": _net(224) + _conv_stack(_JNET, "leaky"),
    "vgg-16": _vgg_classifier(_VGG16),
    BUNDLED_MODEL: data_path("tiny.cfg").read_text(encoding="utf-8"),
}

_DARKNET_SITE = "https://pjreddie.com/media/files/"
OFFICIAL_WEIGHTS: dict[str, str] = {name: f"{_DARKNET_SITE}{name}.weights" for name in ARCHITECTURES}
BUNDLED_WEIGHTS = {BUNDLED_MODEL: data_path("tiny.weights")}
DARKNET_1K_NAMES = "imagenet1k-darknet.names"  # the first 1000 lines of Darknet's imagenet.shortnames.list
DARKNET_LABELS = {"vgg-16": DARKNET_1K_NAMES, BUNDLED_MODEL: DARKNET_1K_NAMES}
DARKNET_1K_WNIDS = "imagenet1k-darknet.wnids"  # their WordNet ids: Darknet's imagenet.labels.list, 1000 lines
KERAS_1K_NAMES = "imagenet1k-keras.names"  # Keras/PyTorch order (sorted WordNet ids), from imagenet_class_index.json


def labels_text(filename: str) -> str:
    return data_path(filename).read_text(encoding="utf-8")
