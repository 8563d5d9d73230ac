"""`python -m benchmarks [--device cpu|gpu|all] [--cases step,round,...] [--out FILE] [--precision f32|tf32|bf16]`
from the repository root: the suite `jaxdream bench` runs, with every case by default."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxdream.errors import JaxdreamError

from .suite import CASES, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/results.json"),
                        help="results JSON; the .md table and .png chart go beside it")
    parser.add_argument("--precision", choices=("f32", "tf32", "bf16"), default="f32")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("JAXDREAM_SHARED", "../shared")),
                        help="the shared data folder (scream.jpg, Tiny Darknet); stand-ins without it")
    args = parser.parse_args(argv)
    shared = args.shared if args.shared.is_dir() else None
    try:
        run(args.device, tuple(c.strip() for c in args.cases.split(",") if c.strip()), args.out, shared,
            precision=args.precision)
    except JaxdreamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
