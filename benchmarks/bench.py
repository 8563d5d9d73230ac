"""`python -m benchmarks.bench [--device cpu|gpu|all] [--cases step,round,...] [--out FILE]`: the same suite as
`jaxdream bench` (the code lives in jaxdream/bench.py so the installed command can run it)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from jaxdream import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu")
    parser.add_argument("--cases", default=",".join(bench.CASES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/results.json"))
    parser.add_argument("--precision", choices=("f32", "tf32", "bf16"), default="f32")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("JAXDREAM_SHARED", "../shared")))
    args = parser.parse_args()
    shared = args.shared if args.shared.is_dir() else None
    bench.run(args.device, tuple(args.cases.split(",")), args.out, shared, precision=args.precision)


if __name__ == "__main__":
    main()
