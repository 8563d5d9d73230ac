"""Make the README's pictures from real runs of the bundled model: `python docs/make_pictures.py [NAME ...]` (all of
them, or the named ones of: dreams, render, atlas; about three minutes on 2 CPU cores). Each picture is a small
JPEG (under 100 KB) in docs/."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import jaxdream as jd
from jaxdream.atlas import run_atlas
from jaxdream.files import image_bytes, write_atomically
from jaxdream.image import to_uint8
from jaxdream.sweep import contact_sheet, sweep
from jaxdream.weights import SAMPLE_IMAGE

DOCS = Path(__file__).resolve().parent
WIDTH = 384  # the photo is dreamed at 384x288: fast, and the README shows it at about that size


def _labelled(images: list[np.ndarray], labels: list[str]) -> Image.Image:
    """Images side by side with a caption under each."""
    tiles = [Image.fromarray(to_uint8(x)) for x in images]
    h = max(t.height for t in tiles)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), h + 18), "white")
    draw, x = ImageDraw.Draw(sheet), 0
    for tile, label in zip(tiles, labels, strict=True):
        sheet.paste(tile, (x, 0))
        draw.text((x + 4, h + 3), label, fill="black")
        x += tile.width + 4
    return sheet


def _save(name: str, picture: Image.Image) -> None:
    data = image_bytes(picture, "JPEG", quality=80)
    assert len(data) <= 100_000, f"{name}: {len(data)} bytes; make it smaller"
    write_atomically(DOCS / name, data, "a picture")
    print(f"docs/{name}: {picture.width}x{picture.height}, {len(data) // 1000} KB")


def dreams(model: jd.Model) -> None:
    photo = jd.load_image(SAMPLE_IMAGE)
    x = np.asarray(Image.fromarray(to_uint8(photo)).resize((WIDTH, WIDTH * 3 // 4), Image.LANCZOS),
                   np.float32) / 255
    dreamed = jd.nightmare(model, x, layer=9, rounds=1, iters=20, rate=0.04)[-1, 0]
    _save("before-after.jpg", _labelled([x, dreamed], ["weights/dog.jpg", "nightmare tiny - ... 9 -iters 20"]))

    rounds = jd.nightmare(model, x, layer=12, rounds=4, iters=8, zoom=0.9)[:, 0]
    small = [np.asarray(Image.fromarray(to_uint8(r)).resize((WIDTH // 2, WIDTH * 3 // 8))) / 255 for r in rounds]
    _save("zoom-rounds.jpg", _labelled(small, [f"round {r}" for r in range(4)]))

    ostrich = jd.lucid(model, x, classes={"ostrich": 1.0}, iters=40)[-1, 0]
    top = jd.top_classes(model, ostrich[None], 1)[0][0]
    _save("lucid-ostrich.jpg", _labelled([x, ostrich], ["weights/dog.jpg",
                                                         f"lucid --class ostrich: {top['name']} {top['prob']:.0%}"]))

    cells = sweep(model, x, layers=[5, 9, 12], rates=[0.02, 0.06], iters=10)
    sheet = DOCS / ".sweep.png"
    contact_sheet(cells, sheet, cell_width=192)
    with Image.open(sheet) as im:
        _save("sweep.jpg", im.convert("RGB"))
    sheet.unlink()


def render(model: jd.Model) -> None:
    images, labels = [], []
    for param in ("fft", "pixel"):
        image = jd.render(model, "class:ostrich", param=param, steps=256)[0]
        top = jd.top_classes(model, image[None], 1)[0][0]
        images.append(image)
        labels.append(f"--param {param}  ->  {top['name']} {top['prob']:.0%}")
    _save("render-ostrich.jpg", _labelled(images, labels))


def atlas(model: jd.Model) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        summary = run_atlas(model, 5, list(range(24)), Path(scratch), size=64, steps=64, batch_size=24)
        assert summary.sheet is not None
        with Image.open(summary.sheet) as im:
            _save("atlas.jpg", im.convert("RGB"))


PICTURES = {"dreams": dreams, "render": render, "atlas": atlas}


def main() -> None:
    model = jd.load_model("tiny")
    for name in sys.argv[1:] or PICTURES:
        PICTURES[name](model)


if __name__ == "__main__":
    main()
