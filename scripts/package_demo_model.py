"""Copy a trained bundle into Resources/Models in half precision, with measured metrics in its card.

    python scripts/package_demo_model.py runs/brain_t1/diffusion/bundle Resources/Models/brain-t1-demo \
        --evaluation eval/report.json --benchmark benchmark/benchmark.json --demo-seconds 40

``--autoencoder BUNDLE`` puts another autoencoder (a VQ-GAN stage's bundle whose encoder and codebook were
kept frozen, ``training.freeze_encoder``) beside the UNet: its encoder and codebook must be those of
``--same-latent-space BUNDLE``, the bundle the UNet learned its latent space from.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from MedLSDMLib.models.bundle import (DIFFUSION_FILE, ModelBundle, load_autoencoder, load_weights, read_card,
                                     verify_weights)
from MedLSDMLib.training.vqgan import ENCODER_KEYS

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


def with_autoencoder(unet_bundle: str, autoencoder: str, latent_space: str, phases) -> ModelBundle:
    """The UNet of ``unet_bundle`` with the autoencoder of ``autoencoder`` (both hash checked), whose encoder and
    codebook must equal those of ``latent_space``; the card takes the autoencoder's settings and training record
    (``phases``: earlier bundles of the same decoder's training, recorded before it)."""
    card = read_card(unet_bundle)
    verify_weights(unet_bundle, card, (DIFFUSION_FILE,))
    decoder_card, model = load_autoencoder(autoencoder)
    _, reference = load_autoencoder(latent_space)
    mine, theirs = model.state_dict(), reference.state_dict()
    if any(not torch.equal(v, mine[k]) for k, v in theirs.items() if k.startswith(ENCODER_KEYS)):
        raise SystemExit(f"{autoencoder}: its encoder or codebook is not that of {latent_space}")
    if decoder_card.intensity != card.intensity:
        raise SystemExit(f"{autoencoder}: its intensity mapping differs from the UNet's bundle")
    training = {k: v for k, v in card.training.items() if not k.startswith("autoencoder")}
    records = {f"autoencoder_phase{i + 1}": read_card(p).training["autoencoder"] for i, p in enumerate(phases)}
    card.training = {**decoder_card.training, **records, **training}
    card.autoencoder = decoder_card.autoencoder
    bundle = ModelBundle(card, model, ModelBundle.create(card).unet)
    load_weights(bundle.unet, Path(unet_bundle) / DIFFUSION_FILE)
    bundle.unet.eval()
    return bundle


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the trained bundle (diffusion stage output)")
    parser.add_argument("out", help="destination folder")
    parser.add_argument("--evaluation", type=Path, help="report.json of medlsdm evaluate")
    parser.add_argument("--benchmark", type=Path, help="benchmark.json of medlsdm benchmark")
    parser.add_argument("--evaluation-note", help="what was evaluated, and how (maps, sampler, seed, segmenter)")
    parser.add_argument("--demo-seconds", type=float, help="wall time of `medlsdm demo`")
    parser.add_argument("--demo-timing", type=Path, help="JSON of demo wall times measured against another model")
    parser.add_argument("--sweep", type=Path, help="JSON of the autoencoder capacity sweep (setup, rows, targets)")
    parser.add_argument("--autoencoder", help="a VQ-GAN bundle whose autoencoder replaces the bundle's")
    parser.add_argument("--autoencoder-phases", nargs="*", default=[],
                        help="bundles of the earlier phases of --autoencoder's training (recorded in the card)")
    parser.add_argument("--same-latent-space", help="with --autoencoder: the bundle whose encoder it must keep")
    parser.add_argument("--previous", type=Path, help="model.json of the previous version: its held-out table "
                                                      "is kept as metrics.previous_held_out_realism")
    parser.add_argument("--period", type=Path, help="JSON of the latent-period peaks (scripts/evaluate_model.py)")
    parser.add_argument("--description", help="the card's description")
    parser.add_argument("--held-out", type=Path, help="summary.json of scripts/evaluate_model.py (make evaluate): "
                                                      "kept as metrics.held_out_realism")
    args = parser.parse_args(argv)

    if args.autoencoder:
        if not args.same_latent_space:
            raise SystemExit("--autoencoder needs --same-latent-space")
        bundle = with_autoencoder(args.bundle, args.autoencoder, args.same_latent_space, args.autoencoder_phases)
    else:
        bundle = ModelBundle.load(args.bundle)
    if args.description:
        bundle.card.description = args.description
    metrics = dict(bundle.card.metrics)
    if args.evaluation:
        metrics["evaluation"] = json.loads(args.evaluation.read_text())["summary"]
        if args.evaluation_note:
            metrics["evaluation"]["setup"] = args.evaluation_note
    if args.benchmark:
        metrics["benchmark"] = benchmark_summary(args.benchmark)
    if args.sweep:
        metrics["autoencoder_sweep"] = json.loads(args.sweep.read_text())
    if args.previous:
        old = json.loads(args.previous.read_text())  # as JSON: the previous networks need not load
        metrics["previous_held_out_realism"] = old["metrics"]["held_out_realism"]
    if args.held_out:
        metrics["held_out_realism"] = json.loads(args.held_out.read_text())
    if args.period:
        metrics["latent_period_peak"] = json.loads(args.period.read_text())
    if args.demo_timing:
        metrics["demo_timing"] = json.loads(args.demo_timing.read_text())
        metrics.pop("demo_seconds_2_cpu_cores", None)  # the previous model's, on another CPU
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
