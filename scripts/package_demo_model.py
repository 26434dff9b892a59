"""Copy a trained bundle into Resources/Models in half precision, with measured metrics in its card.

    python scripts/package_demo_model.py runs/brain_t1/diffusion/bundle Resources/Models/brain-t1-demo \
        --evaluation eval/report.json --benchmark benchmark/benchmark.json --demo-seconds 40
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from MedLSDMLib.bundle import ModelBundle


def benchmark_summary(path: Path) -> dict:
    data = json.loads(path.read_text())
    rows = {r["configuration"]: {"median_seconds": round(r["median_seconds"], 2),
                                 "unet_evaluations": r["unet_evaluations"]} for r in data["rows"] if "times" in r}
    return {"context": {k: data["context"][k] for k in ("size", "device", "threads", "torch", "cpus")},
            "configurations": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the trained bundle (diffusion stage output)")
    parser.add_argument("out", help="destination folder")
    parser.add_argument("--evaluation", type=Path, help="report.json of medlsdm evaluate")
    parser.add_argument("--benchmark", type=Path, help="benchmark.json of medlsdm benchmark")
    parser.add_argument("--demo-seconds", type=float, help="wall time of `medlsdm demo`")
    args = parser.parse_args(argv)

    bundle = ModelBundle.load(args.bundle)
    metrics = dict(bundle.card.metrics)
    if args.evaluation:
        metrics["evaluation"] = json.loads(args.evaluation.read_text())["summary"]
    if args.benchmark:
        metrics["benchmark"] = benchmark_summary(args.benchmark)
    if args.demo_seconds:
        metrics["demo_seconds_2_cpu_cores"] = args.demo_seconds
    bundle.card.metrics = metrics
    bundle.save(args.out, dtype=torch.float16)
    sizes = sum(p.stat().st_size for p in Path(args.out).iterdir()) / 2 ** 20
    print(f"wrote {args.out} ({sizes:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
