"""Issue 23's GPU sweep in one command: the UNet with local SPADE fine-tuned from a bundle, and decoder
variants trained on that bundle's frozen encoder and codebook, all at once on one GPU, each within a
wall-clock budget (``training.max_minutes``) so that every run writes its bundle before the command's limit.

The device machine has no SimpleITK (and no registry), so the training pairs are preprocessed here by the
trainer's own functions (``find_pairs``, ``split_pairs``, ``load_cases``) and travel as one .npz:

    python scripts/gpu_sweep.py prepare --pairs data/demo --bundle Resources/Models/brain-t1-demo --out CASES.npz
    python scripts/gpu_sweep.py all --cases CASES.npz --bundle BUNDLE --runs RUNS --minutes 6.5 [--steps N]

``all`` starts one ``train JOB`` process per job of ``JOBS`` and waits for them; ``train`` loads the cases
from the .npz in place of ``Trainer.load_data``. On a machine without SimpleITK, ``train`` registers a module
of that name whose only member is the one call the io modules make on import; any other use raises.
``--steps`` (or MEDLSDM_SWEEP_STEPS) caps the steps, for a rehearsal on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESIZE = {"model.autoencoder.upsample": "resize", "training.gradient_weight": 1.0, "training.workers": 2}
WIDE = {"model.autoencoder.decoder_channels": [64, 128], "model.autoencoder.spade_hidden_channels": 32}
RECONSTRUCTION_ONLY = {"training.adversarial_start": 10**9}
ADVERSARIAL = {"training.adversarial_start": 0}
# name -> (stage, phases); a phase is (share of the minutes, overrides of the bundle's recorded training config as
# "section.key": value); each later phase starts from the bundle of the one before (init_from)
JOBS: Dict[str, Tuple[str, List[Tuple[float, Dict[str, Any]]]]] = {
    "unet_local": (
        "diffusion",
        [(1.0, {"model.unet.spade": "local", "training.ema_decay": 0.998, "training.workers": 4})],
    ),
    # the UNet alone on the GPU: its patch workers take the machine's cores, each patch is used at 4 noise levels
    "unet_long": (
        "diffusion",
        [
            (
                1.0,
                {
                    "model.unet.spade": "local",
                    "training.batch_size": 4,
                    "training.noise_draws": 4,
                    "training.ema_decay": 0.999,
                    "training.workers": 13,
                },
            )
        ],
    ),
    # 0.2.0's decoder continued: adversarial from the start, with the gradient L1
    "dec_transposed_gan": (
        "vqgan",
        [(1.0, {**ADVERSARIAL, "training.gradient_weight": 1.0, "training.workers": 2})],
    ),
    # resize-convolution upsampling (no latent-grid stamp): a new decoder, reconstruction then adversarial
    "dec_resize": ("vqgan", [(0.4, {**RESIZE, **RECONSTRUCTION_ONLY}), (0.6, {**RESIZE, **ADVERSARIAL})]),
    "dec_resize_wide": (
        "vqgan",
        [(0.4, {**RESIZE, **WIDE, **RECONSTRUCTION_ONLY}), (0.6, {**RESIZE, **WIDE, **ADVERSARIAL})],
    ),
    "dec_resize_gan2": (  # twice the adversarial and gradient weights
        "vqgan",
        [
            (0.4, {**RESIZE, "training.gradient_weight": 2.0, **RECONSTRUCTION_ONLY}),
            (0.6, {**RESIZE, "training.gradient_weight": 2.0, "training.adversarial_weight": 0.1, **ADVERSARIAL}),
        ],
    ),
    "dec_resize_freq": (
        "vqgan",
        [
            (0.4, {**RESIZE, "training.frequency_weight": 1.0, **RECONSTRUCTION_ONLY}),
            (0.6, {**RESIZE, "training.frequency_weight": 1.0, **ADVERSARIAL}),
        ],
    ),
}


def prepare(pairs: str, bundle: str, out: Path) -> None:
    """The training pairs preprocessed onto the bundle's grid and intensity, as the trainer loads them."""
    from MedLSDMLib.card import from_dict
    from MedLSDMLib.models.bundle import read_card
    from MedLSDMLib.training.config import VQGANRun
    from MedLSDMLib.training.data import find_pairs, load_cases, split_pairs, summary

    card = read_card(bundle)
    config = from_dict(VQGANRun, card.training["autoencoder"]["config"])
    m = config.model
    training, validation = split_pairs(find_pairs(pairs), config.data.validation_fraction, config.training.seed)
    cases, ranges = load_cases(training, m.labels, m.spacing, m.orientation, m.intensity)
    val_cases, _ = load_cases(validation, m.labels, m.spacing, m.orientation, m.intensity)
    arrays: Dict[str, np.ndarray] = {}
    for group, items in (("train", cases), ("val", val_cases)):
        for index, case in enumerate(items):
            arrays[f"{group}_{index}_image"] = case.image
            arrays[f"{group}_{index}_classes"] = case.classes
    meta = {
        "train": [c.name for c in cases],
        "val": [c.name for c in val_cases],
        "ranges": ranges,
        "summary": summary(training, cases),
        "validation": [p.name for p in validation],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **arrays)
    print(f"{out}: {len(cases)} training and {len(val_cases)} validation cases, {out.stat().st_size / 1e6:.1f} MB")


def _simpleitk_absent() -> None:
    """Register a SimpleITK module that only takes io.volumes's import-time call; any other use raises."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        module = types.ModuleType("SimpleITK")
        module.ProcessObject = types.SimpleNamespace(SetGlobalWarningDisplay=lambda flag: None)  # type: ignore[attr-defined]

        def missing(name: str) -> Any:
            raise AttributeError(f"SimpleITK.{name}: SimpleITK is not installed on this machine")

        module.__getattr__ = missing  # type: ignore[method-assign]
        sys.modules["SimpleITK"] = module


def _load_cases_from(path: str) -> Any:
    from MedLSDMLib.io.preprocess import Case

    data = np.load(path)
    meta = json.loads(str(data["meta"]))

    def load_data(self: Any, *args: Any) -> List[Tuple[float, float]]:
        self.cases = [
            Case(n, data[f"train_{i}_image"], data[f"train_{i}_classes"]) for i, n in enumerate(meta["train"])
        ]
        self.val_cases = [Case(n, data[f"val_{i}_image"], data[f"val_{i}_classes"]) for i, n in enumerate(meta["val"])]
        self.data_summary = {
            "training": meta["summary"],
            "validation": meta["validation"],
            "sources": self.config.data.sources,
        }
        return [tuple(r) for r in meta["ranges"]]

    return load_data


def _set(config: Dict[str, Any], dotted: str, value: Any) -> None:
    *path, key = dotted.split(".")
    for part in path:
        config = config.setdefault(part, {})
    config[key] = value


def phase_config(
    job: str, phase: int, bundle: str, runs: Path, minutes: float, steps: int, cases: str
) -> Tuple[str, Dict[str, Any]]:
    """The bundle's recorded config of the job's stage with the phase's overrides, its share of the minutes,
    and its paths: the first phase starts from ``bundle``, a later one from the bundle of the one before."""
    from MedLSDMLib.models.bundle import read_card

    stage, phases = JOBS[job]
    share, overrides = phases[phase]
    card = read_card(bundle)
    config = json.loads(json.dumps(card.training["autoencoder" if stage == "vqgan" else "diffusion"]["config"]))
    config["output"] = str(runs / job / f"phase{phase + 1}")
    config["data"]["pairs"] = str(Path(cases).parent)  # not read: the cases come from the .npz
    config["init_from"] = bundle if phase == 0 else str(runs / job / f"phase{phase}" / "bundle")
    config["training"].update({"steps": steps, "max_minutes": share * minutes, "checkpoint_every": 500})
    config["training"]["validate_every"] = steps
    config["model"]["version"] = "0.3.0"
    if stage == "diffusion":
        config["autoencoder"] = bundle
    for dotted, value in overrides.items():
        _set(config, dotted, value)
    return stage, config


def train(job: str, args: argparse.Namespace) -> None:
    """The job's phases one after the other, in this process."""
    _simpleitk_absent()
    import torch

    from MedLSDMLib.card import from_dict
    from MedLSDMLib.training.config import DiffusionRun, VQGANRun
    from MedLSDMLib.training.diffusion import DiffusionTrainer
    from MedLSDMLib.training.trainer import Trainer
    from MedLSDMLib.training.vqgan import VQGANTrainer

    torch.set_num_threads(args.threads)
    Trainer.load_data = _load_cases_from(args.cases)  # type: ignore[method-assign]
    for phase in range(len(JOBS[job][1])):
        stage, config = phase_config(job, phase, args.bundle, Path(args.runs), args.minutes, args.steps, args.cases)
        print(f"{job} phase {phase + 1}: {json.dumps(config['training'])}", flush=True)
        if stage == "vqgan":
            VQGANTrainer.run(from_dict(VQGANRun, config))
        else:
            DiffusionTrainer.run(from_dict(DiffusionRun, config))


def run_all(args: argparse.Namespace) -> int:
    """Every job at once, each its own process and log; the exit status is the number that failed."""
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    processes = {}
    for job in args.jobs or list(JOBS):
        log = open(runs / f"{job}.log", "w", encoding="utf-8")
        command = [sys.executable, __file__, "train", job, "--cases", args.cases, "--bundle", args.bundle]
        command += ["--runs", str(runs), "--minutes", str(args.minutes), "--steps", str(args.steps)]
        command += ["--threads", str(args.threads)]
        processes[job] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, time.time())
    failed = 0
    for job, (process, log, started) in processes.items():
        code = process.wait()
        log.close()
        failed += code != 0
        print(f"{job}: exit {code} after {time.time() - started:.0f} s", flush=True)
    return failed


def pack(runs: Path) -> None:
    """Every bundle under ``runs`` in half precision (as the shipped bundles), its card's hashes updated;
    a diffusion bundle's copy of the autoencoder it was trained with is left out (it is ``--bundle``'s)."""
    from safetensors.torch import load_file, save_file

    from MedLSDMLib.models.bundle import sha256

    for card_path in sorted(runs.glob("*/phase*/bundle/model.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        folder = card_path.parent
        if (folder / "diffusion.safetensors").exists():
            (folder / "autoencoder.safetensors").unlink()
            card["weights"].pop("autoencoder.safetensors")
        for name in card["weights"]:
            state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(folder / name).items()}
            save_file(state, str(folder / name))
            card["weights"][name] = sha256(folder / name)
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        steps = {k: v.get("steps") for k, v in card["training"].items() if isinstance(v, dict) and "steps" in v}
        print(f"{folder}: {steps}, {sum(p.stat().st_size for p in folder.iterdir()) / 2**20:.1f} MiB", flush=True)


DESCRIPTIONS = {
    "dec_transposed_gan": "0.2.0's decoder (transposed-convolution upsampling) continued: adversarial from the start, "
    "gradient L1 1.0",
    "dec_resize": "new SPADE decoder (32, 64), hidden 16, resize-convolution upsampling, gradient L1 1.0; "
    "reconstruction, then adversarial 0.05",
    "dec_resize_wide": "as dec_resize, twice as wide: (64, 128), hidden 32",
    "dec_resize_gan2": "as dec_resize, gradient L1 2.0 and adversarial 0.1",
    "dec_resize_freq": "as dec_resize, with the frequency-domain L1 1.0",
}


def table(runs: Path, evaluations: Path, device: str) -> Dict[str, Any]:
    """The sweep's rows: each decoder bundle's training (steps and seconds of each phase) beside its round trip
    (``scripts/evaluate_model.py --reconstruction-only --autoencoder BUNDLE --out EVALUATIONS/JOB_PHASE``)."""
    rows = []
    for summary_path in sorted(evaluations.glob("*/summary_reconstruction.json")):
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        bundle = Path(summary["autoencoder"])
        if not bundle.is_absolute():
            bundle = REPO / bundle
        if not (bundle / "model.json").is_file():
            continue
        job, phase = bundle.parent.parent.name, int(bundle.parent.name[len("phase") :])
        phases = [
            json.loads((bundle.parent.parent / f"phase{i}" / "bundle" / "model.json").read_text())
            for i in range(1, phase + 1)
        ]
        records = [p["training"]["autoencoder"] for p in phases]
        rows.append(
            {
                "autoencoder": f"{job}, phase {phase}: {DESCRIPTIONS.get(job, job)}"
                + (" (reconstruction phase only)" if phase < len(JOBS.get(job, ("", []))[1]) else ""),
                "steps": [r["steps"] for r in records],
                "training_seconds": round(sum(r["seconds"] for r in records), 1),
                "device": device,
                "bundle": str(bundle.relative_to(REPO)) if bundle.is_relative_to(REPO) else str(bundle),
                **{
                    k: summary["row"][k]
                    for k in ("dice", "correlation", "histogram_distance", "sharpness", "background_noise")
                },
                "latent_period_round_trip": summary.get("latent_period", {}).get("rows", {}).get("round trip"),
            }
        )
    return {"rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--pairs", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("pack")
    p.add_argument("--runs", type=Path, required=True)
    p = sub.add_parser("table")
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--evaluations", type=Path, required=True)
    p.add_argument("--device", default="one NVIDIA H200 (bf16 autocast), all jobs at once")
    p.add_argument("--out", type=Path, required=True)
    for name in ("train", "all"):
        p = sub.add_parser(name)
        if name == "train":
            p.add_argument("job", choices=list(JOBS))
        else:
            p.add_argument("--jobs", nargs="*", choices=list(JOBS))
        p.add_argument("--cases", required=True)
        p.add_argument("--bundle", required=True)
        p.add_argument("--runs", required=True)
        p.add_argument("--minutes", type=float, required=True)
        p.add_argument("--steps", type=int, default=int(os.environ.get("MEDLSDM_SWEEP_STEPS", "100000")))
        p.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.pairs, args.bundle, args.out)
        return 0
    if args.command == "table":
        args.out.write_text(json.dumps(table(args.runs, args.evaluations, args.device), indent=2) + "\n")
        return 0
    if args.command == "pack":
        pack(args.runs)
        return 0
    if args.command == "train":
        train(args.job, args)
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
