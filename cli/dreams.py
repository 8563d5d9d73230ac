"""Dreams of images and videos: nightmare, deepdream, lucid, video."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from jaxdream.cli import options as o
from jaxdream.cli.app import command, err_console, say, showing


@command()
def nightmare(
    model: o.ModelArg,
    args: Annotated[list[str], typer.Argument(
        metavar="[WEIGHTS] IMAGE LAYER", help="Darknet's order: the weights (or --weights), the image, the layer.")],
    weights: o.Weights = None, rounds: o.Rounds = 1, iters: o.Iters = 10, range_: o.Range = 1,
    octaves: o.Octaves = 4, rate: o.Rate = 0.04, thresh: o.Thresh = 1.0, zoom: o.Zoom = 1.0, rotate: o.Rotate = 0.0,
    norm: o.Norm = 1, objective: o.Objective = "darknet", channel: o.Channel = 0, guide: o.Guide = None,
    reconstruct: Annotated[bool, typer.Option(metavar="", help="Feature reconstruction instead of dreaming.")] = False,
    momentum: Annotated[float, typer.Option(metavar="X", help="Reconstruction: momentum of the update.")] = 0.9,
    lambda_: Annotated[float, typer.Option("--lambda", metavar="X", help="Reconstruction: smoothing strength.")]
        = 0.01,
    smooth: Annotated[int, typer.Option(metavar="N", help="Reconstruction: smoothing radius in pixels.")] = 1,
    prefix: Annotated[Path | None, typer.Option(metavar="FOLDER", help="Darknet's name for --out.")] = None,
    out: o.Out = None, format_: o.Format = "jpg", seed: o.Seed = 0, stats: o.Stats = None,
    precision: o.Precision = None, tile: o.Tile = None, memory: o.Memory = None, preprocess: o.Preprocess = None,
    labels: o.Labels = None,
    animate: Annotated[Path | None, typer.Option(metavar="FILE", help=(
        "Write the rounds as one animation (.mp4, .gif or .webp), frame by frame as they finish, instead of one "
        "image per round: -rounds 60 -zoom 1.05 --animate zoom.mp4 is the infinite zoom."))] = None,
    fps: Annotated[float, typer.Option(metavar="X", help="Frames per second of --animate.")] = 12.0,
    quiet: o.Quiet = False,
) -> None:
    """Darknet's `nightmare`: `jaxdream nightmare vgg-conv vgg-conv.weights scream.jpg 10 -range 3 -iters 20`.

    Writes <image>_<cfg>_<layer>_<round:06d>.<format> after every round, named as Darknet names them (or, with
    --animate FILE, one animation of all rounds).
    """
    started = time.perf_counter()
    from jaxdream import commands

    weights, (image, layer) = o.split_weights(args, weights, ("IMAGE", "LAYER"))
    with showing(quiet) as (shown, bar):
        commands.nightmare(
            model, weights, Path(image), layer, rounds=rounds, out=out, prefix=prefix, fmt=format_, animate=animate,
            fps=fps, stats=stats, guide=guide, preprocess=preprocess, labels=labels, reconstruct=reconstruct,
            momentum=momentum, lam=lambda_, smooth=smooth, download=bar, started=started, iters=iters,
            layer_range=range_, octaves=octaves, rate=rate, thresh=thresh, zoom=zoom, rotate=rotate,
            norm=bool(norm), seed=seed, objective=objective, channel=channel, tile=tile, memory=memory,
            precision=precision,
            on_written=lambda r, name, s: shown.print(f"round {r + 1}/{rounds}: {iters} iterations, {s:.1f}s elapsed "
                                                      f"-> {escape(str(name))}"))


@command()
def deepdream(
    model: o.ModelArg,
    args: Annotated[list[str], typer.Argument(metavar="[WEIGHTS] IMAGE LAYER", help="The weights (or --weights), "
                                                                                    "the image, the layer.")],
    weights: o.Weights = None, octaves: o.Octaves = 4, octave_scale: o.OctaveScale = 1.4, iters: o.Iters = 10,
    rate: o.Rate = 0.01, objective: o.Objective = "l2", channel: o.Channel = 0, guide: o.Guide = None,
    seed: o.Seed = 0, out: o.Out = None, format_: o.Format = "jpg", stats: o.Stats = None,
    precision: o.Precision = None, tile: o.Tile = None, memory: o.Memory = None, preprocess: o.Preprocess = None,
    labels: o.Labels = None, quiet: o.Quiet = False,
) -> None:
    """Google-style DeepDream: octave pyramid with the detail carried between octaves.

    Writes <image>_<model>_<layer>_deepdream.<format>.
    """
    from jaxdream import commands

    weights, (image, layer) = o.split_weights(args, weights, ("IMAGE", "LAYER"))
    with showing(quiet) as (_, bar):
        name = commands.deepdream(
            model, weights, Path(image), layer, out=out, fmt=format_, stats=stats, guide=guide,
            preprocess=preprocess, labels=labels, download=bar, octaves=octaves, octave_scale=octave_scale,
            iters=iters, rate=rate, objective=objective, channel=channel, seed=seed, precision=precision, tile=tile,
            memory=memory)
    if not quiet:
        say(f"-> {escape(str(name))}")


@command()
def lucid(
    model: o.ModelArg, images: o.ImagesArg, class_: o.Class, weights: o.Weights = None, iters: o.Iters = 40,
    rate: o.Rate = 0.02, target_scale: o.TargetScale = 100.0, octaves: o.Octaves = 1,
    jitter: Annotated[bool, typer.Option(metavar="", help="Random shift and flip per iteration (a mix: the first half "
                                                          "only).")] = True,
    rounds: o.Rounds = 1, zoom: o.Zoom = 1.0, rotate: o.Rotate = 0.0, seed: o.Seed = 0, out: o.Out = None,
    format_: o.Format = "jpg", stats: o.Stats = None, precision: o.Precision = None, preprocess: o.Preprocess = None,
    labels: o.Labels = None, quiet: o.Quiet = False,
) -> None:
    """Dream images toward ImageNet classes: `jaxdream lucid vgg-16 dog.jpg --class ostrich`.

    A weighted mix ('ostrich:0.5,pelican:0.5') ascends the log-likelihood of its shares under the softmax.
    Its step anneals to 0 and the second half of the round is unjittered, so the image settles on the mix.

    Writes <image>_<model>_class-<classes>_<round:06d>.<format> for every image and round.
    """
    from jaxdream import commands

    with showing(quiet) as (shown, bar):
        name, results = commands.lucid(
            model, weights, images, class_, rounds=rounds, out=out, fmt=format_, stats=stats, preprocess=preprocess,
            labels=labels, download=bar, iters=iters, rate=rate, target_scale=target_scale, octaves=octaves,
            jitter=jitter, zoom=zoom, rotate=rotate, seed=seed, precision=precision,
            on_written=lambda path, r, written, s: shown.print(
                f"{escape(path.name)} round {r + 1}/{rounds}: {s:.1f}s -> {escape(str(written))}"))
        for result in results:
            verdict = ", ".join(f"{row['name']} {100 * row['prob']:.1f} %" for row in result.top)
            shown.print(f"  {result.image.name}: {name} now sees: {escape(verdict)}")


@command()
def video(
    model: o.ModelArg,
    args: Annotated[list[str], typer.Argument(metavar="[WEIGHTS] VIDEO LAYER [MORE]...", help=(
        "The weights (or --weights), the video (anything ffmpeg reads), the layer, then more videos of the same "
        "size: they dream side by side, one batch per frame."))],
    weights: o.Weights = None,
    out: Annotated[Path | None, typer.Option(metavar="FILE|FOLDER", help=(
        "The output .mp4 (.gif, .webp) for one video, or a folder for several (default: the current folder, "
        "<video>_<model>_<layer>_video.mp4)."))] = None,
    iters: o.Iters = 10, range_: o.Range = 1, octaves: o.Octaves = 4, rate: o.Rate = 0.04, thresh: o.Thresh = 1.0,
    norm: o.Norm = 1, seed: o.Seed = 0,
    blend: Annotated[float, typer.Option(metavar="X", help=(
        "Temporal coherence: each frame starts from this much of the previous dreamed frame (warped by the flow) "
        "and the rest of the new frame; 0 dreams every frame on its own."))] = 0.5,
    flow: Annotated[str, typer.Option(metavar="dis|none", help=(
        "dis: follow the motion with OpenCV's DIS optical flow of the input frames (pixels it cannot follow start "
        "fresh); none: blend without warping."))] = "dis",
    resume: o.Resume = False, precision: o.Precision = None, tile: o.Tile = None, memory: o.Memory = None,
    preprocess: o.Preprocess = None, labels: o.Labels = None, stats: o.Stats = None, quiet: o.Quiet = False,
) -> None:
    """Dream a video frame by frame with temporal coherence, keeping its frame rate and sound:
    `jaxdream video tiny.cfg tiny.weights clip.mp4 9 --out dreamed.mp4`. After a Ctrl-C, the same command with
    --resume finishes it."""
    from jaxdream import commands

    weights, (video_in, layer, *more) = o.split_weights(args, weights, ("VIDEO", "LAYER"), more=True)
    with showing(quiet) as (shown, bar):
        targets, run = commands.video(
            model, weights, [Path(video_in), *map(Path, more)], layer, out=out, stats=stats, preprocess=preprocess,
            labels=labels, download=bar, progress=shown.counter("dreaming frames", "frame"), iters=iters,
            layer_range=range_, octaves=octaves, rate=rate, thresh=thresh, norm=bool(norm), seed=seed, blend=blend,
            flow=flow, precision=precision, tile=tile, memory=memory, resume=resume)
    if not quiet:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in run["share"].items())
        err_console.print(f"{run['frames']} frames dreamed ({run['resumed_frames']} resumed) -> "
                          f"{', '.join(map(str, targets))}; time: {shares}", highlight=False)


@command()
def render(
    model: o.ModelArg,
    args: Annotated[list[str], typer.Argument(metavar="[WEIGHTS] OBJECTIVE", help=(
        "The weights (or --weights), then what to show: class:ostrich, bce:ostrich (the published BCE recipe), "
        "layer:9, neuron:9:12[:X:Y], channel:9:12 or 9:12, diversity:9; combined with ' + ', ' - ' and weights: "
        "'class:ostrich - 0.5*class:pelican'. Layers by index or name (fire5/concat_1:12)."))],
    weights: o.Weights = None,
    param: o.Param = "fft",
    spectrum: Annotated[Path | None, typer.Option(metavar="FILE", help=(
        "maco: the magnitude spectrum (.npy from `jaxdream spectrum`; default: the bundled sample photo's)."))]
        = None,
    crops: Annotated[int, typer.Option(metavar="N", help="Transformed views of each image per step, their "
                                                         "objective averaged (maco: 6).")] = 1,
    mask: Annotated[bool, typer.Option(metavar="", help=(
        "Also write each image's attribution map (|gradient| over the steps): <name>_mask.png (a heat map) and "
        "<name>_rgba.png (the image with the map as alpha)."))] = False,
    decorrelate: Annotated[bool, typer.Option(metavar="", help="Optimise decorrelated colours (ImageNet's colour "
                                                               "covariance).")] = True,
    transforms: o.Transforms = "standard",
    size: Annotated[str | None, typer.Option(metavar="WxH", help=(
        "The image size (one number: a square); default 224x224, or the --from image's size."))] = None,
    steps: o.Steps = 256,
    lr: Annotated[float, typer.Option(metavar="X", help="Adam's learning rate.")] = 0.05,
    decay: Annotated[float, typer.Option(metavar="X", help="fft: frequencies scaled by 1/f^X.")] = 1.0,
    values: Annotated[str, typer.Option(metavar="sigmoid|clip", help="How the optimised values become [0, 1] "
                                                                     "pixels.")] = "sigmoid",
    redirect_relu: Annotated[bool, typer.Option(metavar="", help=(
        "Every ReLU passes gradients that would raise a dead unit (lucid's redirected ReLU), for units that start "
        "inactive."))] = False,
    colours_from: Annotated[Path | None, typer.Option(metavar="FOLDER", help=(
        "Decorrelate colours with the covariance of these photos (a folder, glob or list) instead of "
        "ImageNet's."))] = None,
    batch: Annotated[int, typer.Option(metavar="N", help="Images rendered together, each from its own noise.")] = 1,
    diversity: Annotated[float, typer.Option(metavar="W", help=(
        "Weight of a term pushing the batch's images apart (Gram-matrix cosine at the objective's deepest "
        "layer; needs --batch 2 or more)."))] = 0.0,
    start: Annotated[Path | None, typer.Option("--from", metavar="IMAGE", help=(
        "Start from this image instead of noise (at its size unless --size says otherwise)."))] = None,
    seed: o.Seed = 0, out: o.Out = None, format_: Annotated[str, typer.Option(
        "--format", metavar="png|jpg", help="Image format.")] = "png",
    stats: o.Stats = None, precision: o.Precision = None, preprocess: o.Preprocess = None, labels: o.Labels = None,
    quiet: o.Quiet = False,
) -> None:
    """Feature visualisation: render what a network responds to, from noise: `jaxdream render tiny class:ostrich`.

    Writes <model>_<objective>_<item:02d>.png per batch item, and for class objectives says what the network
    now sees. One compiled program per objective structure and size: other channels, classes or weights compile
    nothing.
    """
    from jaxdream import commands

    if len(args) not in (1, 2):
        raise typer.BadParameter("give the objective, after the weights if the model needs them",
                                 param_hint="[WEIGHTS] OBJECTIVE")
    with showing(quiet) as (shown, bar):
        files, seen = commands.render(
            model, args[0] if len(args) == 2 else weights, args[-1], out=out, fmt=format_, size=size, start=start,
            stats=stats, preprocess=preprocess, labels=labels, download=bar, param=param, decorrelate=decorrelate,
            transforms=transforms, steps=steps, lr=lr, decay=decay, value_range=values, redirect=redirect_relu,
            colours_from=colours_from, spectrum_file=spectrum, crops=crops, mask=mask, batch=batch,
            diversity=diversity, seed=seed, precision=precision)
        for i, path in enumerate(files):
            verdict = "" if seen is None else ": " + ", ".join(f"{row['name']} {100 * row['prob']:.1f} %"
                                                                for row in seen[i])
            shown.print(f"{escape(str(path))}{escape(verdict)}")


@command()
def spectrum(
    photos: Annotated[list[str], typer.Argument(metavar="PHOTO...", help="Photos, folders, globs or .txt lists.")],
    output: Annotated[Path, typer.Option("-o", "--output", metavar="FILE", help="The .npy written.")],
    size: Annotated[str, typer.Option(metavar="WxH", help="The render size it is for (one number: a square).")]
        = "224x224",
) -> None:
    """The mean magnitude spectrum of photos, for `render --param maco --spectrum FILE` (MACO keeps a natural
    image's magnitudes and optimises only the phase): `jaxdream spectrum photos/ -o spectrum.npy --size 448`."""
    from jaxdream import commands

    path, count = commands.spectrum(photos, output, size)
    say(f"{count} photo(s) -> {path}")


@command()
def accentuate(
    model: o.ModelArg,
    args: Annotated[list[str], typer.Argument(metavar="[WEIGHTS] IMAGE OBJECTIVE", help=(
        "The weights (or --weights), the photo, and what to accentuate in it (render's objectives: 9:12, "
        "class:ostrich, layer:9 ...)."))],
    reg_layer: Annotated[str, typer.Option(metavar="LAYER", help="The layer whose features stay close to the "
                                                                 "photo's.")],
    reg: Annotated[str, typer.Option(metavar="auto|W", help=(
        "The closeness term's weight; auto balances it against the objective's value at the photo."))] = "auto",
    weights: o.Weights = None, steps: o.Steps = 128, param: o.Param = "fft", transforms: o.Transforms = "none",
    lr: Annotated[float, typer.Option(metavar="X", help="Adam's learning rate.")] = 0.05,
    seed: o.Seed = 0, out: o.Out = None, format_: Annotated[str, typer.Option(
        "--format", metavar="png|jpg", help="Image format.")] = "png",
    precision: o.Precision = None, preprocess: o.Preprocess = None, labels: o.Labels = None, quiet: o.Quiet = False,
) -> None:
    """Feature accentuation: show a feature where and how it appears in a photo (the render starts from the photo
    and stays close to it in --reg-layer's features): `jaxdream accentuate tiny dog.jpg 9:15 --reg-layer 5`.

    Writes <image>_<model>_accent-<objective>.png.
    """
    from jaxdream import commands

    if len(args) not in (2, 3):
        raise typer.BadParameter("give the photo and the objective, after the weights if the model needs them",
                                 param_hint="[WEIGHTS] IMAGE OBJECTIVE")
    with showing(quiet) as (shown, bar):
        path = commands.accentuate(
            model, args[0] if len(args) == 3 else weights, Path(args[-2]), args[-1], reg_layer=reg_layer, reg=reg,
            out=out, fmt=format_, preprocess=preprocess, labels=labels, download=bar, steps=steps, param=param,
            transforms=transforms, lr=lr, seed=seed, precision=precision)
        shown.print(escape(str(path)))
