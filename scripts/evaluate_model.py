"""``make evaluate``: generate and evaluate a model on the held-out set, next to the training-free baseline
renderer and the autoencoder round trip (the ceiling of any sample), and print one table.

Steps (each reused when its output is already there and was made by the same model and settings):
1. the training data (scripts/prepare_demo_data.py) when ``--pairs`` has none;
2. the held-out set (scripts/make_deformed_pairs.py): the voxelmorph subject plus ``--count`` deformed maps
   of each training subject on oblique anisotropic grids, into ``OUT/pairs``;
3. one synthetic image per label map on its real image's grid (``--seed``, the default sampler), into
   ``OUT/synthetic`` (NRRD, which keeps the model, seed and sampler in its header);
   and a second image per map with seed + 1 (``OUT/synthetic_next_seed``): how alike two samples of one map are;
4. the autoencoder round trip of each real image (``medlsdm reconstruct``), into ``OUT/reconstruction``;
5. ``medlsdm evaluate --baseline`` on the synthetic images (OUT/report_model.{json,md}) and ``medlsdm
   evaluate`` on the round trips (OUT/report_reconstruction.{json,md}), with the mixture segmenter;
6. the table (OUT/summary.md, OUT/summary.json); ``--update-card`` also writes it into the model card.

Usage: python scripts/evaluate_model.py [--model brain-t1-demo] [--out data/eval] [--count 1] [--precision auto]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
COLUMNS = (("Dice ratio (mixture)", "dice"), ("correlation", "correlation"),
           ("histogram distance", "histogram_distance"), ("sharpness / real", "sharpness"),
           ("background noise", "background_noise"))


def log(message: str) -> None:
    print(f"[evaluate] {message}", flush=True)


def run(arguments: List[str]) -> None:
    log("running: " + " ".join(arguments))
    completed = subprocess.run(arguments, cwd=REPO)
    if completed.returncode != 0:
        raise SystemExit(f"evaluate_model: {' '.join(arguments[:3])} ... failed (exit {completed.returncode})")


def cases(pairs: Path) -> List[str]:
    return sorted(p.name[: -len("_label.nii.gz")] for p in pairs.glob("*_label.nii.gz"))


def made_by(path: Path, expected: Dict[str, str]) -> bool:
    """Whether ``path`` exists and its header says it was made with ``expected`` (model, seed, sampler ...)."""
    if not path.is_file():
        return False
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return all(reader.HasMetaDataKey(k) and reader.GetMetaData(k) == v for k, v in expected.items())


def row(summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    r = summary["realism"]
    return {"dice": summary["dice"]["ratio_of_means"], "correlation": r["correlation"],
            "histogram_distance": r["histogram_distance_mean"], "sharpness": r["sharpness_ratio_foreground"],
            "background_noise": r["background_noise_synthetic"], "real_background_noise": r["background_noise_real"],
            "psnr": summary["psnr"]["mean"], "ssim": summary["ssim"]["mean"]}


def table(rows: Dict[str, Dict[str, Optional[float]]], real_noise: Optional[float]) -> List[str]:
    def cell(value: Optional[float]) -> str:
        return "—" if value is None else f"{value:.3f}"

    header = ["", *[name for name, _ in COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows.items():
        lines.append("| " + " | ".join([name, *[cell(values[key]) for _, key in COLUMNS]]) + " |")
    lines.append("| real images | 1 | 1 | 0 | 1 | " + cell(real_noise) + " |")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brain-t1-demo", help="bundle folder or registered name")
    parser.add_argument("--pairs", default="data/demo", help="the training pairs (prepared when missing)")
    parser.add_argument("--out", default="data/eval", help="output folder")
    parser.add_argument("--count", type=int, default=1, help="deformed maps per training subject")
    parser.add_argument("--seed", type=int, default=1, help="generation seed")
    parser.add_argument("--precision", default="auto", help="generation precision (auto, fp32, bf16)")
    parser.add_argument("--sampler", help="sampler (default: the model's default); pin it to compare models")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the sampler's)")
    parser.add_argument("--guidance", type=float, help="guidance weight w (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--apt-update", action="store_true", help="passed to prepare_demo_data.py")
    parser.add_argument("--update-card", action="store_true", help="write the table into the model card")
    parser.add_argument("--reconstruction-only", action="store_true",
                        help="only the autoencoder round trip (no sampling): for comparing autoencoders")
    parser.add_argument("--autoencoder", help="with --reconstruction-only: the bundle (a VQ-GAN stage's bundle/ is "
                                              "enough) whose autoencoder replaces the model's")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    python = sys.executable
    pairs_in, out = REPO / args.pairs, REPO / args.out
    if not list(pairs_in.glob("*_image.nii.gz")):
        run([python, "scripts/prepare_demo_data.py", "--out", str(pairs_in)] + (["--apt-update"] if args.apt_update else []))
    held_out = out / "pairs"
    if not cases(held_out):
        run([python, "scripts/make_deformed_pairs.py", "--pairs", str(pairs_in), "--out", str(held_out),
             "--count", str(args.count)])
    names = cases(held_out)
    log(f"{len(names)} held-out case(s): {', '.join(names)}")

    from MedLSDMLib.models.bundle import load_autoencoder, read_card, write_card
    from MedLSDMLib.cli.main import main as medlsdm
    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.models.registry import resolve_model
    from MedLSDMLib.sampling.samplers import default_sampler, resolve_steps
    from MedLSDMLib.io.volumes import write_image

    folder = resolve_model(args.model)
    card = read_card(folder)
    sampler = args.sampler or default_sampler(card.scheduler)
    steps = resolve_steps(sampler, args.steps, card.scheduler)
    guidance = card.default_guidance if args.guidance is None else args.guidance
    generator = Generator.load(folder, args.device, args.precision)
    if args.autoencoder:
        if not args.reconstruction_only:
            raise SystemExit("evaluate_model: --autoencoder needs --reconstruction-only (the UNet knows only its own)")
        card, generator.bundle.autoencoder = load_autoencoder(REPO / args.autoencoder)
        generator.bundle.card.autoencoder = card.autoencoder
    synthetic, next_seed, reconstruction = out / "synthetic", out / "synthetic_next_seed", out / "reconstruction"
    synthetic.mkdir(parents=True, exist_ok=True)
    next_seed.mkdir(parents=True, exist_ok=True)
    reconstruction.mkdir(parents=True, exist_ok=True)
    model_name = f"{card.name} {card.version}"
    previous = out / "summary.json"
    timings: Dict[str, float] = {}
    if previous.is_file():  # the times of volumes made earlier and reused now
        try:
            timings = {k: v for k, v in json.loads(previous.read_text())["generation_seconds"].items() if k in names}
        except (ValueError, KeyError, AttributeError):
            timings = {}
    for name in names:
        labels, image = held_out / f"{name}_label.nii.gz", held_out / f"{name}_image.nii.gz"
        target = synthetic / f"{name}_synthetic.nrrd"
        expected = {"medlsdm_model": model_name, "medlsdm_seed": str(args.seed),
                    "medlsdm_sampler": f"{sampler} {steps} steps, guidance {guidance:g}"}
        if args.reconstruction_only:
            pass
        else:
            for seed, folder_of in ((args.seed, synthetic), (args.seed + 1, next_seed)):
                target = folder_of / f"{name}_synthetic.nrrd"
                if made_by(target, {**expected, "medlsdm_seed": str(seed)}):
                    log(f"reusing {target}")
                    continue
                tic = time.perf_counter()
                result, = generator.generate(str(labels), str(image), seed=seed, sampler=sampler, steps=steps,
                                             guidance=guidance)
                write_image(result, target)
                if seed == args.seed:
                    timings[name] = round(time.perf_counter() - tic, 1)
                log(f"generated {target} in {time.perf_counter() - tic:.1f} s")
        round_trip = reconstruction / f"{name}.nrrd"
        if made_by(round_trip, {"medlsdm_model": model_name}) and not args.autoencoder:
            log(f"reusing {round_trip}")
        else:
            write_image(generator.reconstruct(str(image), str(labels)), round_trip)
            log(f"reconstructed {round_trip}")

    period = latent_period(generator, card, out, args.seed, sampler, steps, args.reconstruction_only)
    reports = {}
    stages = (("model", synthetic, ["--baseline"]), ("reconstruction", reconstruction, []))
    for what, folder_of, extra in stages[1:] if args.reconstruction_only else stages:
        prefix = out / f"report_{what}"
        code = medlsdm(["evaluate", "--real", str(held_out), "--labels", str(held_out), "--synthetic", str(folder_of),
                        "-o", str(prefix), "--progress", "none", *extra])
        if code != 0:
            raise SystemExit(f"evaluate_model: medlsdm evaluate failed for the {what} (exit {code})")
        reports[what] = json.loads(prefix.with_suffix(".json").read_text())
    if args.reconstruction_only:
        values = row(reports["reconstruction"]["summary"])
        print(f"autoencoder {args.autoencoder or model_name}: " + ", ".join(
            f"{key} {'—' if values[key] is None else format(values[key], '.3f')}" for _, key in COLUMNS), flush=True)
        (out / "summary_reconstruction.json").write_text(json.dumps(
            {"autoencoder": args.autoencoder or model_name, "cases": names, "row": values, "latent_period": period},
            indent=2) + "\n")
        return 0
    rows = {f"model {model_name}": row(reports["model"]["summary"]),
            "baseline renderer (no training)": row(reports["model"]["baseline"]["summary"]),
            "autoencoder round trip (ceiling)": row(reports["reconstruction"]["summary"])}
    real_noise = reports["model"]["summary"]["realism"]["background_noise_real"]
    lines = table(rows, real_noise)
    verdict = reports["model"]["comparison"]["verdict"]
    cpu = cpu_flags()
    context = (f"{len(names)} held-out cases ({', '.join(names)}); {model_name}, {sampler} {steps} steps, guidance "
               f"{guidance:g}, seed {args.seed}, precision {args.precision} "
               f"({generator_precision(generator, args.precision)}); CPU flags: {cpu}")
    alike = seed_to_seed(held_out, synthetic, next_seed, names)
    peaks = [f"- {name}: whole volume {v['whole_volume']:.2f}x, brain box {v['brain_box']:.2f}x"
             for name, v in period.get("rows", {}).items()]
    text = "\n".join([f"# Held-out evaluation: {model_name}", "", context, "", *lines, "",
                      f"Against the baseline renderer: {verdict}.", "",
                      f"Two samples of one map (seeds {args.seed} and {args.seed + 1}): correlation "
                      f"{alike['mean']:.3f} over the foreground, against "
                      f"{rows[f'model {model_name}']['correlation']:.3f} between a sample and the real image.", "",
                      f"Latent-period ({card.autoencoder.downsample_factor}-voxel) peak on the bundled example:",
                      *peaks, ""])
    (out / "summary.md").write_text(text)
    summary = {"model": model_name, "cases": names, "sampler": sampler, "steps": steps, "guidance": guidance,
               "seed": args.seed,
               "precision": f"{args.precision} ({generator_precision(generator, args.precision)})", "cpu_flags": cpu, "rows": rows, "real_background_noise": real_noise,
               "verdict": verdict, "generation_seconds": timings, "latent_period": period,
               "per_class": per_class(reports), "seed_to_seed_correlation": alike}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.update_card:
        card.metrics["held_out_realism"] = {**summary, "setup": (
            "scripts/evaluate_model.py (make evaluate): the voxelmorph subject and one deformed map of each "
            "training subject on oblique 1.4x1.6x2.2 mm grids; mixture segmenter; realism metrics of "
            "MedLSDMLib/evaluation/realism.py; baseline = MedLSDMLib/evaluation/baseline.py; round trip = medlsdm reconstruct")}
        write_card(Path(folder), card)
        log(f"wrote the table into {Path(folder) / 'model.json'} (metrics.held_out_realism)")
    print("", flush=True)
    print(text, flush=True)
    log(f"wrote {out / 'summary.md'}, {out / 'summary.json'}, {out / 'report_model.md'} and "
        f"{out / 'report_reconstruction.md'} in {time.perf_counter() - start:.0f} s")
    return 0


def seed_to_seed(held_out: Path, first: Path, second: Path, names: List[str]) -> Dict[str, Any]:
    """Pearson's correlation of the two samples of each map over its foreground (label != 0), and their mean:
    near 1, the samples of one map hardly differ; against the sample-to-real correlation, it tells a model's
    systematic error (both samples far from the real image) from its variability."""
    import numpy as np
    import SimpleITK as sitk

    cases = {}
    for name in names:
        foreground = sitk.GetArrayFromImage(sitk.ReadImage(str(held_out / f"{name}_label.nii.gz"))) != 0
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(f / f"{name}_synthetic.nrrd")))[foreground]
                for f in (first, second))
        cases[name] = float(np.corrcoef(a, b)[0, 1])
    return {"cases": cases, "mean": float(np.mean(list(cases.values())))}


def per_class(reports: Dict[str, Any]) -> Dict[str, Any]:
    """Per tissue class (label value): histogram distance and sharpness of the model, the baseline and the round
    trip; the background's noise against the tissue contrast; in how many cases the class means keep the real
    images' order."""
    sources = {"model": reports["model"]["summary"]["realism"],
               "baseline": reports["model"]["baseline"]["summary"]["realism"],
               "round_trip": reports["reconstruction"]["summary"]["realism"]}
    result: Dict[str, Any] = {key: {name: r[key] for name, r in sources.items()}
                              for key in ("histogram_distance", "sharpness_ratio")}
    result["background_to_contrast"] = {"real": sources["model"]["background_to_contrast_real"],
                                        **{n: r["background_to_contrast_synthetic"] for n, r in sources.items()}}
    result["contrast_order_right"] = {n: f"{r['contrast_order_right']} of {r['cases']}" for n, r in sources.items()}
    return result


def latent_period(generator: Any, card: Any, out: Path, seed: int, sampler: str, steps: int,
                  reconstruction_only: bool) -> Dict[str, Any]:
    """The latent-period peak (MedLSDMLib/evaluation/periodicity.py) of the bundled example's real image, its
    round trip and (unless ``reconstruction_only``) the demo's sample, on the example's 2 mm grid (the model's
    working grid, axes flipped): power at the latent grid's period over that of its neighbouring frequencies."""
    import SimpleITK as sitk
    from MedLSDMLib.evaluation.periodicity import describe, latent_period_peaks
    from MedLSDMLib.io.volumes import image_to_array

    examples = REPO / "Resources" / "Examples"
    labels, image = examples / "brain_example_label.nii.gz", examples / "brain_example_image.nii.gz"
    classes = image_to_array(sitk.ReadImage(str(labels)))
    if any(abs(s - m) > 1e-6 for s, m in zip(sitk.ReadImage(str(labels)).GetSpacing(), card.spacing)):
        log("latent period: the example is not on the model's spacing; not measured")
        return {}
    volumes = {"real image": sitk.ReadImage(str(image)), "round trip": generator.reconstruct(str(image), str(labels))}
    if not reconstruction_only:
        volumes["sample (demo)"] = generator.generate(str(labels), str(image), seed=seed, sampler=sampler,
                                                       steps=steps)[0]
    period = card.autoencoder.downsample_factor
    rows = {name: latent_period_peaks(image_to_array(v).astype("float32"), classes, period)
            for name, v in volumes.items()}
    for name, peaks in rows.items():
        log(f"latent period ({period} voxels) peak, {name}: {describe(peaks)}")
    result = {"period_voxels": period, "example": "Resources/Examples/brain_example_{label,image}.nii.gz",
              "seed": seed, "rows": rows}
    (out / "latent_period.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return ", ".join(f for f in ("avx2", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512_bf16/amx_bf16"


def generator_precision(generator: Any, name: str) -> str:
    from MedLSDMLib.runtime.devices import resolve_device, resolve_precision

    chosen = resolve_precision(name, resolve_device(generator.device_name))
    if hasattr(chosen, "name"):  # a precision object (name: fp32, bf16, fp16)
        return str(chosen.name)
    return "fp32" if chosen is None else str(chosen).replace("torch.", "")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
