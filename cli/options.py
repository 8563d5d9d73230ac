"""The command line's one vocabulary: every option that several commands take, once, with its name, help and
metavar (a command sets only the default its mode has). Flags show no metavar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jaxdream.errors import OptionError


def _option(*names: str, metavar: str = "", help: str) -> typer.models.OptionInfo:
    return typer.Option(*names, metavar=metavar, help=help)


# Positional arguments
ModelArg = Annotated[str, typer.Argument(
    metavar="MODEL", help="Darknet .cfg, built-in name (vgg-conv, jnet-conv, vgg-16, tiny), converted or Keras .h5, "
                          "or .onnx model.")]
ImagesArg = Annotated[list[Path], typer.Argument(metavar="IMAGE", help="One or more images.")]
ImageArg = Annotated[Path, typer.Argument(metavar="IMAGE", help="Input image (JPEG, PNG, ...).")]
LayerArg = Annotated[str, typer.Argument(
    metavar="LAYER", help="The layer: an index, or a layer name (`jaxdream weights info` lists them).")]

# Model
Weights = Annotated[str | None, _option(
    "--weights", metavar="WEIGHTS", help="Darknet .weights, converted or Keras .h5, a zoo name (fetched once), or - "
                                         "when MODEL carries its weights (.h5, .onnx).")]
Preprocess = Annotated[str | None, _option(
    metavar="NAME", help="ONNX models: the values the network expects: caffe (BGR, 0-255, ImageNet mean subtracted), "
                         "torch (RGB, ImageNet mean/std), tf ([-1, 1]) or raw ([0, 1]).")]
Labels = Annotated[Path | None, _option(
    metavar="FILE", help="ONNX models: class names, one per line or 'index,name' lines.")]
Layer = Annotated[str | None, _option(metavar="LAYER", help="The layer: an index, or a layer name.")]

# Dreaming
Rounds = Annotated[int, _option(metavar="N", help="Rounds; one image is written after each.")]
Iters = Annotated[int, _option(metavar="N", help="Iterations per round (deepdream: per octave; video: per frame).")]
Range = Annotated[int, _option("--range", metavar="N", help="Each iteration picks a layer in LAYER +- range/2.")]
Octaves = Annotated[int, _option(
    metavar="N", help="Octaves: random scales 1/1.3333^k, k < N, per iteration (deepdream: the pyramid's levels).")]
Rate = Annotated[float, _option(metavar="X", help="Step size of the normalised update.")]
Thresh = Annotated[float, _option(metavar="X", help="Only activations above mean + thresh*std count.")]
Zoom = Annotated[float, _option(
    metavar="X", help="Between rounds, the centre (w*zoom x h*zoom) resized back, as Darknet: <1 zooms in, >1 out.")]
Rotate = Annotated[float, _option(metavar="RADIANS", help="Rotation between rounds, in radians (as Darknet).")]
Norm = Annotated[int, _option(metavar="0|1", help="1: normalise each update to zero mean, unit std (Darknet's).")]
Objective = Annotated[str, _option(
    metavar="NAME", help="darknet (thresholded L2), l2, channel, neuron (with --channel) or guide (with --guide).")]
Channel = Annotated[int, _option(metavar="N", help="Channel for the channel/neuron objectives.")]
Guide = Annotated[Path | None, _option(metavar="IMAGE", help="Guide image for the guide objective.")]
OctaveScale = Annotated[float, _option(metavar="X", help="deepdream: size ratio between octaves.")]
Class = Annotated[str, _option("--class", metavar="CLASSES", help="'ostrich', '9', or 'ostrich:0.7,pelican:0.3'.")]
TargetScale = Annotated[float, _option(
    metavar="X", help="lucid: BCE-with-logits target of the chosen classes (0 for the rest), split by weights.")]
Seed = Annotated[int, _option(metavar="N", help="Random seed: the same command gives the same images.")]

# Running
Precision = Annotated[str | None, _option(
    metavar="MODE", help="Compute mode: f32 (exact, the default; or $JAXDREAM_PRECISION), tf32 or bf16 (faster on "
                         "GPUs).")]
Tile = Annotated[int | None, _option(
    metavar="N", help="Dream in tiles of N x N pixels (one compiled gradient program for every image size; the "
                      "threshold is per tile). Default: untiled unless the image would not fit in memory.")]
Memory = Annotated[str | None, _option(
    metavar="SIZE", help="Memory budget (e.g. 6G) past which the dream is tiled by itself; default: half the RAM, "
                         "80 % of a GPU.")]
Size = Annotated[str | None, _option(metavar="WxH", help="Image size WIDTHxHEIGHT.")]
BatchSize = Annotated[int, _option(metavar="N", help="Images per vmapped batch (a multiple of the devices).")]
Resume = Annotated[bool, _option(help="Continue an interrupted run: skip what is done (the same bytes as an "
                                      "uninterrupted run).")]
ExactSizes = Annotated[bool, _option(help=(
    "nightmare: compile for each image size on its own, so each result is byte-identical to `jaxdream nightmare` on "
    "that image. By default sizes within 2x the pixels of each other share one canvas and its programs (a folder "
    "of many sizes compiles about as long as one size); results then match up to float rounding "
    "(benchmarks/NOTES.md)."))]

# Output
Out = Annotated[Path | None, _option(metavar="FOLDER", help="Output folder, created if missing (default: the current "
                                                            "folder).")]
Format = Annotated[str, _option("--format", metavar="jpg|png", help="Image format: jpg (quality 80, as Darknet) or "
                                                                    "png.")]
Stats = Annotated[Path | None, _option(metavar="FILE", help="Write timings, sizes and the device as JSON here.")]
Quiet = Annotated[bool, _option(help="No progress output.")]


def split_weights(args: list[str], weights: str | None, names: tuple[str, ...], more: bool = False
                  ) -> tuple[str | None, list[str]]:
    """Darknet's positional WEIGHTS: ``args`` start with it unless --weights is given (or, for a command without
    ``more``, when exactly ``names`` follow MODEL). Returns (weights, the rest)."""
    positional = weights is None and (more or len(args) > len(names))
    if positional:
        weights, args = args[0], args[1:]
    if len(args) < len(names) or (len(args) > len(names) and not more):
        given = "WEIGHTS " if positional else ""
        raise OptionError(f"expected MODEL [WEIGHTS] {' '.join(names)}{' [MORE]...' if more else ''}; got MODEL "
                          f"{given}{' '.join(args)} (give WEIGHTS as the second word or with --weights, - for a "
                          "model that carries them)")
    return weights, args

# Feature visualisation (render, atlas)
Steps = Annotated[int, _option(metavar="N", help="Optimisation steps (Adam).")]
Param = Annotated[str, _option(metavar="fft|pixel|maco", help=(
    "What is optimised: the image's Fourier spectrum (1/f scaled), its pixels, or (maco) only the spectrum's phase "
    "under a natural image's magnitudes."))]
Transforms = Annotated[str, _option(metavar="standard|maco|none", help=(
    "Random transforms before the network each step (standard: pad 12, jitter 8, scale 0.9-1.1, rotate 10 degrees, "
    "jitter 4; maco: a 20-25 % crop seen at 224 px, and noise)."))]
