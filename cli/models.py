"""Models and what they see: classify, eval, weights convert/info/fetch, models, plan, info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from jaxdream.cli import options as o
from jaxdream.cli.app import DownloadBar, command, err_console, out_console, say, showing, weights_app


@command()
def classify(
    model: o.ModelArg, images: o.ImagesArg, weights: o.Weights = None,
    top: Annotated[int, typer.Option(metavar="N", help="How many classes to show.")] = 5,
    json_: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON for scripts.")] = False,
    preprocess: o.Preprocess = None, labels: o.Labels = None,
) -> None:
    """Top classes of each image with the model's own preprocessing (Darknet: letterbox, gray fill)."""
    from jaxdream import commands

    with showing(json_) as (_, bar):
        results = commands.classify(model, images, weights=weights, top=top, preprocess=preprocess, labels=labels,
                                    download=bar)
    if json_:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        out_console.print(result["image"], highlight=False)
        for row in result["top"]:
            out_console.print(f"  {100 * row['prob']:6.2f}%  {row['name']} ({row['index']})", highlight=False)


@command(name="eval")
def eval_(
    sources: Annotated[list[Path], typer.Argument(metavar="DIR|FILE...", help=(
        "Folders written by render, atlas or accentuate (their manifest says what each picture was made for), or "
        "pictures in them."))],
    models: Annotated[str, typer.Option(metavar="M1,M2,...", help=(
        "ImageNet-1k classifiers, comma-separated: tiny, a Keras .h5 or a converted .h5 (a cfg with weights or an "
        ".onnx with its preprocessing: `jaxdream weights convert` it first). Classes are matched by WordNet id "
        "across label orders."))],
    references: Annotated[Path | None, typer.Option(metavar="DIR", help=(
        "Real photos, one subfolder per class (named by WordNet id or class name): plausibility is the cosine "
        "similarity to them."))] = None,
    layer: Annotated[str | None, typer.Option(metavar="LAYER", help=(
        "Where plausibility and diversity compare features, in the model that made each picture (default: its "
        "deepest feature map below the logits)."))] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE", help=(
        "The JSON results (a Markdown table goes beside it); default eval.json in the folder given."))] = None,
    quiet: o.Quiet = False,
) -> None:
    """How well feature visualisations show their class: per picture, the target's rank and probability under
    each model, transferability (the share of the other models whose top-1 / top-5 is the target), plausibility
    (--references), diversity within a batch and, for accentuations, the feature distance to the photo:
    `jaxdream eval atlas/ --models tiny,mobilenet.h5,squeezenet.h5`."""
    from jaxdream import commands, evaluation

    with showing(quiet) as (_, bar):
        result, written = commands.evaluate(sources, models, output=output, references=references, layer=layer,
                                            download=bar)
    if not quiet:
        print(evaluation.markdown(result).split("\n\n")[0])
    say(f"{len(result['pictures'])} picture(s) under {len(result['models'])} model(s) -> "
        f"{', '.join(map(str, written))}")


@command(weights_app, "convert")
def weights_convert(
    model: o.ModelArg,
    weights: Annotated[str | None, typer.Argument(metavar="[WEIGHTS]", help=(
        "Darknet .weights or Keras weights .h5 (if needed; - or nothing for a model that carries them)."))] = None,
    output: Annotated[Path, typer.Option("-o", "--output", metavar="FILE", help="The .h5 file to write.")]
        = Path("model.h5"),
    preprocess: o.Preprocess = None, labels: o.Labels = None,
) -> None:
    """Convert a model into one jaxdream .h5 (architecture, parameters, the source file's sha256)."""
    from jaxdream import commands

    written = commands.convert(model, weights, output, preprocess, labels)
    err_console.print(f"wrote {escape(str(written))}", highlight=False)


@command(weights_app, "info")
def weights_info(
    model: o.ModelArg,
    height: Annotated[int | None, typer.Option(metavar="N", help="Input height for the shapes (default: the "
                                                                 "model's).")] = None,
    width: Annotated[int | None, typer.Option(metavar="N", help="Input width for the shapes (default: the "
                                                                "model's).")] = None,
    preprocess: o.Preprocess = None,
) -> None:
    """The layer table: index, type, output shape and parameters — pick a dream layer from it."""
    from jaxdream import commands

    described = commands.layer_table(model, height, width, preprocess)
    table = Table(title=described.title)
    for column in ("layer", "type", "output (h x w x c)", "params"):
        table.add_column(column, justify="right" if column != "type" else "left")
    for row in described.rows:
        h, w, c = row["output"]
        kind = f"{row['type']} {row['name']}" if "name" in row else row["type"]
        table.add_row(str(row["index"]), kind, f"{h} x {w} x {c}", f"{row['params']:,}")
    out_console.print(table)
    out_console.print(f"total parameters: {described.total_params:,}")
    out_console.print(f"input: {described.input_note}", highlight=False)


@command(weights_app, "fetch")
def weights_fetch(name: Annotated[str, typer.Argument(metavar="NAME", help="A zoo name: vgg-conv, jnet-conv, vgg-16, "
                                                                           "tiny.")]) -> None:
    """Download a zoo model's official weights into the cache ($JAXDREAM_HOME, default ~/.cache/jaxdream)."""
    from jaxdream import commands

    with DownloadBar() as bar:
        entry, path = commands.fetch(name, bar)
    err_console.print(f"{entry}: {escape(str(path))}", highlight=False)


@command()
def models() -> None:
    """List the built-in architectures and where their weights come from."""
    from jaxdream import commands

    table = Table(title="built-in models")
    for column in ("name", "weights URL", "bytes", "cached"):
        table.add_column(column)
    for row in commands.models():
        table.add_row(row["name"], row["weights"], str(row["bytes"]), "yes" if row["cached"] else "no")
    out_console.print(table)


@command()
def plan(
    model: o.ModelArg, layer: o.LayerArg,
    size: Annotated[str, typer.Option(metavar="WxH", help="Image size WIDTHxHEIGHT.")],
    batch_size: o.BatchSize = 1, tile: o.Tile = None, memory: o.Memory = None,
) -> None:
    """What a dream of this size needs before a long run: the untiled program and tiles, each with the memory its
    compiled program plans (arguments, outputs, temporaries), against the budget. Needs no weights."""
    from jaxdream import commands

    budget, rows = commands.plan(model, layer, size, batch_size, tile, memory)
    table = Table(title=f"{model} layer {layer} at {size}, budget {budget / 2**30:.1f} GB")
    for column in ("how", "planned MB", "fits", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["how"], f"{row['bytes'] / 2**20:,.0f}", "yes" if row["fits"] else "no", row["note"])
    out_console.print(table)


@command()
def info() -> None:
    """What this installation runs on: versions, devices, compute modes, the cache folder, the bundled model."""
    from jaxdream import commands

    for name, value in commands.environment():
        out_console.print(f"[bold]{name:>14}[/bold]  {escape(value)}", highlight=False, soft_wrap=True)
