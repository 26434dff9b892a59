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

from MedLSDMLib.models.bundle import ModelBundle

REPOSITORY = Path(__file__).resolve().parents[1]


def portable(value, root: Path = REPOSITORY):
    """The card with paths of this machine made relative to the repository (``runs/...``)."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value).resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    return value


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
    parser.add_argument("--evaluation-note", help="what was evaluated, and how (maps, sampler, seed, segmenter)")
    parser.add_argument("--demo-seconds", type=float, help="wall time of `medlsdm demo`")
    parser.add_argument("--sweep", type=Path, help="JSON of the autoencoder capacity sweep (setup, rows, targets)")
    args = parser.parse_args(argv)

    bundle = ModelBundle.load(args.bundle)
    metrics = dict(bundle.card.metrics)
    if args.evaluation:
        metrics["evaluation"] = json.loads(args.evaluation.read_text())["summary"]
        if args.evaluation_note:
            metrics["evaluation"]["setup"] = args.evaluation_note
    if args.benchmark:
        metrics["benchmark"] = benchmark_summary(args.benchmark)
    if args.sweep:
        metrics["autoencoder_sweep"] = json.loads(args.sweep.read_text())
    if args.demo_seconds:
        metrics["demo_seconds_2_cpu_cores"] = args.demo_seconds
    bundle.card.metrics = metrics
    training = portable(bundle.card.training)
    stage2 = training.get("diffusion", {}).get("data", {})
    if not stage2.get("sources"):  # stage 2 trains on stage 1's data: the same sources and licences
        stage2["sources"] = training.get("autoencoder", {}).get("data", {}).get("sources", [])
    bundle.card.training = training
    bundle.save(args.out, dtype=torch.float16)
    sizes = sum(p.stat().st_size for p in Path(args.out).iterdir()) / 2 ** 20
    print(f"wrote {args.out} ({sizes:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
