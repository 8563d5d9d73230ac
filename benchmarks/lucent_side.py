"""lucent and jaxdream side by side (issue 26): the same SqueezeNet 1.1, the same classes and settings (fft,
decorrelated, standard transforms, Adam 0.05, 256 steps, 224 px), seconds per image at batch 1 and 16, and the
transferability of both sets under ``jaxdream eval`` (Tiny Darknet and MobileNet judge SqueezeNet's pictures).

    python -m benchmarks.lucent_side TORCH_PYTHON [--out benchmarks/out/lucent]

TORCH_PYTHON is the interpreter of a separate environment holding torch, torchvision, torch-lucent, onnx and
onnxruntime (``python -m venv lucent-venv && lucent-venv/bin/pip install torch torchvision torch-lucent onnx
onnxruntime``); the lucent half runs there (``benchmarks/lucent_torch.py``), jaxdream's here. Results go to
``<out>/side_by_side.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from jaxdream.atlas import run_atlas
from jaxdream.evaluation import evaluate, find_pictures
from jaxdream.weights import DARKNET_1K_WNIDS, data_path

from .quality import CLASSES, classifiers

STEPS, SIZE, BATCHES, SINGLE = 256, 224, (1, 16), 2  # batch 1 renders the first SINGLE classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("torch_python", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/lucent"))
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    shared = Path(os.environ.get("JAXDREAM_SHARED", "../shared"))
    models = classifiers(shared)
    onnx_dir = shared / "models" / "squeezenet-1.1-onnx"
    squeezenet = models["squeezenet"]
    report: dict[str, Any] = {"steps": args.steps, "size": SIZE, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "rows": []}
    for batch in BATCHES:
        classes = list(CLASSES[: SINGLE if batch == 1 else batch])
        lucent_dir, jax_dir = args.out / f"lucent-b{batch}", args.out / f"jaxdream-b{batch}"
        subprocess.run([str(args.torch_python), str(Path(__file__).with_name("lucent_torch.py")),
                        "--onnx", str(onnx_dir / "squeezenet1.1_fp16.onnx"), "--labels", str(onnx_dir / "labels.txt"),
                        "--wnids", str(data_path(DARKNET_1K_WNIDS)),
                        "--photos", *map(str, sorted((shared / "data" / "images").glob("*.jpg"))),
                        "--classes", ",".join(map(str, classes)), "--batch", str(batch), "--steps", str(args.steps),
                        "--size", str(SIZE), "--maker", squeezenet.name, "--out", str(lucent_dir)], check=True)
        lucent = json.loads((lucent_dir / "lucent.json").read_text())
        summary = run_atlas(squeezenet, None, classes, jax_dir, batch_size=batch, size=(SIZE, SIZE),
                            steps=args.steps)
        stats = summary.stats
        steady = summary.seconds - stats.compile_seconds
        for name, folder, seconds, extra in (
                ("lucent", lucent_dir, lucent["seconds"], {"check_vs_onnxruntime": lucent["lucent_check"]}),
                ("jaxdream", jax_dir, steady, {"compile_s": stats.compile_seconds, "wall_s": summary.seconds})):
            result = evaluate(find_pictures([folder]), list(models.values()))
            (folder / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
            row = {"tool": name, "batch": batch, "images": len(classes), "seconds": seconds,
                   "seconds_per_image": seconds / len(classes), "images_per_s": len(classes) / seconds,
                   **{k: v for k, v in result["summary"][0].items() if k != "made_by" and v is not None}, **extra}
            print(json.dumps(row))
            report["rows"].append(row)
    (args.out / "side_by_side.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
