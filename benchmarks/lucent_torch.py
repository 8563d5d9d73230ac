"""The lucent half of the side-by-side comparison (issue 26), run by ``benchmarks/lucent_side.py`` in a separate
environment with torch, torchvision, torch-lucent, onnx and onnxruntime (none of them a jaxdream dependency).

SqueezeNet 1.1 is torchvision's architecture with the weights of ../shared/models/squeezenet-1.1-onnx (float16,
Caffe input: BGR, 0-255, mean subtracted, done by a wrapper so lucent sees images in [0, 1]); its probabilities are
checked against onnxruntime on the sample photos before anything is rendered. Classes are rendered with lucent's
``render_vis`` (fft, decorrelated, standard transforms, Adam at 0.05), ``--batch`` classes per call, the logit of
item i's class (the pooled ReLU output feeding the softmax, as jaxdream's ``class_logit`` on this network) as
objective. Pictures are written as PNGs with a manifest record each, the same record ``jaxdream eval`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torchvision
from lucent.optvis import objectives, param, render, transform
from onnx import numpy_helper
from PIL import Image

CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


class CaffeInput(torch.nn.Module):
    """The network behind Caffe's preprocessing: RGB in [0, 1] -> BGR 0-255 minus the mean."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flip(1) * 255.0 - self.mean)


def squeezenet(onnx_path: Path) -> CaffeInput:
    """torchvision's SqueezeNet 1.1 holding the ONNX file's convolutions, in graph order."""
    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name: numpy_helper.to_array(init).astype(np.float32) for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    net = torchvision.models.squeezenet1_1(weights=None).eval()
    modules = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(modules) != len(convs):
        raise SystemExit(f"{onnx_path}: {len(convs)} convolutions, torchvision's SqueezeNet 1.1 has {len(modules)}")
    with torch.no_grad():
        for module, node in zip(modules, convs, strict=True):
            kernel, bias = (weights[name] for name in node.input[1:3])
            if tuple(module.weight.shape) != kernel.shape:
                raise SystemExit(f"{node.name}: {kernel.shape} does not fit {tuple(module.weight.shape)}")
            module.weight.copy_(torch.from_numpy(kernel))
            module.bias.copy_(torch.from_numpy(bias))
    return CaffeInput(net).eval()


def check_against_onnxruntime(model: CaffeInput, onnx_path: Path, photos: list[Path]) -> dict[str, float]:
    """Max |probability difference| and top-1 agreement with onnxruntime on ``photos`` squashed to 224."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    worst, agree = 0.0, 0
    for photo in photos:
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255.0
        x = torch.from_numpy(rgb.transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            mine = torch.softmax(model(x).flatten(1), 1)[0].numpy()
        caffe = (rgb[..., ::-1] * 255.0 - np.asarray(CAFFE_MEAN_BGR, np.float32)).transpose(2, 0, 1)[None]
        theirs = np.asarray(session.run(None, {feed.name: caffe.astype(np.float16)})[0], np.float32).reshape(-1)
        worst = max(worst, float(np.abs(mine - theirs).max()))
        agree += int(mine.argmax() == theirs.argmax())
    return {"max_abs_prob_difference": worst, "top1_agreement": agree / len(photos), "photos": len(photos)}


def render_classes(model: CaffeInput, classes: list[int], batch: int, steps: int, size: int, out: Path,
                   labels: list[str], wnids: list[str], maker: str) -> dict[str, float]:
    """Render ``classes`` ``batch`` at a time with lucent; PNGs and manifest records in ``out``. Returns seconds."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    run = f"lucent-{time.strftime('%Y%m%dT%H%M%S')}"
    seconds = 0.0
    for first in range(0, len(classes), batch):
        group = classes[first : first + batch]
        group = group + [group[-1]] * (batch - len(group))  # a short last batch keeps the batch size
        objective = sum(objectives.channel("net_classifier_3", c, batch=i) for i, c in enumerate(group))
        torch.manual_seed(first)
        began = time.perf_counter()
        images = render.render_vis(
            model, objective, lambda b=batch: param.image(size, batch=b, fft=True, decorrelate=True),
            transforms=transform.standard_transforms, thresholds=(steps,), preprocess=False, progress=False,
            show_image=False)[-1]
        seconds += time.perf_counter() - began
        for i, c in enumerate(classes[first : first + batch]):
            path = out / f"lucent_class_{c:04d}.png"
            Image.fromarray(np.uint8(np.clip(images[i], 0, 1) * 255 + 0.5)).save(path)
            record = {"input": f"unit:class:{c}", "input_sha256": None, "outputs": [path.name],
                      "sha256": [hashlib.sha256(path.read_bytes()).hexdigest()], "status": "done", "mode": "lucent",
                      "model": maker, "model_digest": None, "run": run,
                      "target": {"class": c, "name": labels[c], "wnid": wnids[c]}}
            with manifest.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
    return {"seconds": seconds, "images": len(classes), "images_per_s": len(classes) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--wnids", type=Path, required=True, help="Darknet's 1000 WordNet ids (sorted: this order)")
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--classes", required=True, help="sorted-WordNet class indices, comma-separated")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--maker", default="squeezenet1", help="the model name jaxdream gives the network")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = squeezenet(args.onnx)
    for p in model.parameters():
        p.requires_grad_(False)
    labels = [line.split(",", 1)[1] for line in args.labels.read_text().splitlines()]
    wnids = sorted(args.wnids.read_text().split())
    result = {"torch": torch.__version__, "lucent_check": check_against_onnxruntime(model, args.onnx, args.photos),
              "batch": args.batch, "steps": args.steps, "size": args.size, "threads": args.threads,
              **render_classes(model, [int(c) for c in args.classes.split(",")], args.batch, args.steps, args.size,
                               args.out, labels, wnids, args.maker)}
    (args.out / "lucent.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
