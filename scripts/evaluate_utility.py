"""``make utility``: what a synthetic training set is worth. Train the project's segmenter (``medlsdm train
segmenter``, the same config and steps for every arm) on four training sets and test each on real images of
people none of them saw:

* A: the four real training pairs (data/demo, scripts/prepare_demo_data.py);
* B: the training-free renderer (``medlsdm synthesize --renderer data/demo``) on the ten SynthSeg maps of
  ../shared/data (FreeSurfer labels -> tissue with Resources/Mappings/freesurfer_tissue.csv) and the four
  training maps, ``--deform MM`` with K samples each;
* C: MedLSDM (``medlsdm synthesize``) on exactly B's maps and deformations (same seeds);
* D: A + C.

The maps are cropped to their tissue's bounding box (plus a margin) first: the same anatomy on a smaller grid,
so sampling costs less. The test set: the voxelmorph subject of ../shared/data (its FreeSurfer labels ->
tissue), or ``--test FOLDER`` of NAME_image / NAME_label pairs (tissue maps 0-3). Never a training subject.

Writes ``--output`` (default utility/): utility.json ({"arms": {"A": {"mean_dice", "per_class", "per_case",
"seconds", ...}, ...}}), utility.md (the table) and utility.png (per-class Dice, one bar per arm). Every
stage is reused when its output is there (synthesize resumes; a segmenter whose config is unchanged is kept).

Usage: python scripts/evaluate_utility.py [--samples 1] [--deform 4] [--steps 300] [--output utility]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" if (REPO.parent / "shared").is_dir() else Path("/work/shared/data")
TISSUE_MAP = REPO / "Resources" / "Mappings" / "freesurfer_tissue.csv"
SEGMENTER_CONFIG = REPO / "Resources" / "Configs" / "brain_t1_segmenter.yaml"
CLASSES = {1: "csf", 2: "grey_matter", 3: "white_matter"}
ARMS = {"A": "real (4 training pairs)", "B": "renderer", "C": "MedLSDM", "D": "real + MedLSDM"}
MARGIN_MM = 6.0


def log(message: str) -> None:
    print(f"[utility] {message}", flush=True)


def run(arguments: List[str]) -> float:
    """Run a command from the repository root; its seconds, or exit when it fails."""
    log("running: " + " ".join(arguments))
    start = time.perf_counter()
    completed = subprocess.run(arguments, cwd=REPO)
    if completed.returncode != 0:
        raise SystemExit(f"evaluate_utility: {' '.join(arguments[:4])} ... failed (exit {completed.returncode})")
    return time.perf_counter() - start


def cropped_tissue(label: Path, out: Path, map_file: Optional[Path]) -> None:
    """The label map as tissue classes (through ``map_file``), cropped to its tissue plus MARGIN_MM."""
    import SimpleITK as sitk

    from MedLSDMLib.io.labels import LabelTable, class_image
    from MedLSDMLib.io.volumes import write_image
    from MedLSDMLib.models.bundle import read_card
    from MedLSDMLib.models.registry import resolve_model

    table = LabelTable(read_card(resolve_model(None)).labels)
    classes = class_image(label, table, map_file=map_file)  # indices = the demo model's values 0-3
    array = sitk.GetArrayViewFromImage(classes)
    where = np.argwhere(array > 0)
    margin = [int(np.ceil(MARGIN_MM / s)) for s in classes.GetSpacing()[::-1]]
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, array.shape)
    size, index = (high - low)[::-1], low[::-1]
    write_image(sitk.RegionOfInterest(classes, [int(s) for s in size], [int(i) for i in index]), out)


def prepare(work: Path, pairs: Path, test: Optional[Path]) -> Tuple[Path, Path]:
    """The maps of B and C (cropped tissue maps) and the test pairs."""
    maps, test_folder = work / "maps", test or work / "test"
    maps.mkdir(parents=True, exist_ok=True)
    for seg in sorted((SHARED / "synthseg-label-maps").glob("training_seg_*.nii.gz")):
        target = maps / f"synthseg{seg.name[len('training_seg'):-len('.nii.gz')]}_label.nii.gz"
        if not target.is_file():
            cropped_tissue(seg, target, TISSUE_MAP)
    for label in sorted(pairs.glob("*_label.nii.gz")):
        if not (maps / label.name).is_file():
            cropped_tissue(label, maps / label.name, None)
    if test is None:
        test_folder.mkdir(parents=True, exist_ok=True)
        image, label = test_folder / "voxelmorph_image.nii.gz", test_folder / "voxelmorph_label.nii.gz"
        if not label.is_file():
            import shutil

            from MedLSDMLib.io.labels import LabelTable, class_image
            from MedLSDMLib.io.volumes import write_image
            from MedLSDMLib.models.bundle import read_card
            from MedLSDMLib.models.registry import resolve_model

            subject = SHARED / "voxelmorph-subject"
            shutil.copyfile(subject / "subject_image.nii.gz", image)
            table = LabelTable(read_card(resolve_model(None)).labels)
            write_image(class_image(subject / "subject_label.nii.gz", table, map_file=TISSUE_MAP), label)
    return maps, test_folder


def segmenter_config(arm: str, data: Path, work: Path, args: argparse.Namespace) -> Path:
    """The project's segmenter config with this run's output, data, steps and patch size (the same for every
    arm), no validation split (the test set is the held-out real images)."""
    import yaml

    config = yaml.safe_load(SEGMENTER_CONFIG.read_text(encoding="utf-8"))
    config["output"] = str(work / "runs" / arm)
    config["data"]["pairs"] = str(data)
    config["data"]["validation_fraction"] = 0.0
    training = config["training"]
    training.update(steps=args.steps, patch_size=[args.patch] * 3, batch_size=args.batch)
    training.update(checkpoint_every=args.steps, validate_every=args.steps, log_every=10)
    path = work / "configs" / f"{arm}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False)
    if path.is_file() and path.read_text(encoding="utf-8") != text:  # a changed config: train again
        import shutil

        shutil.rmtree(work / "runs" / arm, ignore_errors=True)
    path.write_text(text, encoding="utf-8")
    return path


def pair_list(path: Path, folders: List[Path]) -> Path:
    """A CSV list of every NAME_image / NAME_label pair of ``folders`` (arm D)."""
    rows = ["image,label"]
    for folder in folders:
        for label in sorted(folder.glob("*_label.nii.gz")):
            image = label.with_name(label.name.replace("_label.nii.gz", "_image.nii.gz"))
            rows.append(f"{os.path.relpath(image, path.parent)},{os.path.relpath(label, path.parent)}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_arm(segmenter: Path, test: Path) -> Dict[str, Any]:
    """Per-class Dice of the segmenter on each real test pair, against its tissue map."""
    from MedLSDMLib.evaluation.dice import dice_per_class, mean_defined
    from MedLSDMLib.evaluation.segmenter import UNetSegmenter
    from MedLSDMLib.io.volumes import image_to_array, read_image

    model = UNetSegmenter.load(segmenter)
    per_case: Dict[str, Dict[str, Optional[float]]] = {}
    for label in sorted(test.glob("*_label.nii.gz")):
        name = label.name[: -len("_label.nii.gz")]
        image, labels = read_image(test / f"{name}_image.nii.gz"), read_image(label)
        predicted = model.segment(image, labels)
        scores = dice_per_class(predicted, image_to_array(labels).astype(np.int64), CLASSES)
        per_case[name] = {CLASSES[k]: v for k, v in scores.items()}
    per_class = {c: mean_defined(case[c] for case in per_case.values()) for c in CLASSES.values()}
    return {"mean_dice": mean_defined(per_class.values()), "per_class": per_class, "per_case": per_case}


def made_seconds(folder: Path) -> float:
    """The seconds the pairs of a synthesized set took to make (manifest.csv, runs before this one included)."""
    import csv

    with open(folder / "manifest.csv", newline="", encoding="utf-8") as stream:
        return sum(float(row["seconds"]) for row in csv.DictReader(stream))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_outputs(output: Path, report: Dict[str, Any]) -> None:
    """utility.json, utility.md (the table) and utility.png (the chart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (output / "utility.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    arms = report["arms"]

    def cell(value: Optional[float]) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = [
        "| arm | training set | pairs | " + " | ".join(CLASSES.values()) + " | mean Dice | minutes |",
        "|---|---|---|" + "---|" * (len(CLASSES) + 2),
    ]
    for arm, result in arms.items():
        lines.append(
            f"| {arm} | {ARMS[arm]} | {result['pairs']} | "
            + " | ".join(cell(result["per_class"][c]) for c in CLASSES.values())
            + f" | {cell(result['mean_dice'])} | {result['seconds'] / 60:.1f} |"
        )
    lines += ["", "Targets: " + "; ".join(f"{t['target']}: {'met' if t['met'] else 'missed'} ({t['numbers']})"
                                         for t in report["targets"])]
    (output / "utility.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=120)
    width = 0.8 / len(arms)
    names = list(CLASSES.values()) + ["mean"]
    for k, (arm, result) in enumerate(arms.items()):
        values = [result["per_class"][c] or 0.0 for c in CLASSES.values()] + [result["mean_dice"] or 0.0]
        bars = axis.bar(np.arange(len(names)) + (k - (len(arms) - 1) / 2) * width, values, width,
                        label=f"{arm}: {ARMS[arm]}")
        axis.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    axis.set_xticks(np.arange(len(names)), names)
    axis.set_ylim(0, 1)
    axis.set_ylabel("Dice on held-out real images")
    cases = ", ".join(next(iter(arms.values()))["per_case"])
    axis.set_title(f"Train on each set, test on real ({cases})", fontsize=9)
    axis.legend(fontsize=7, loc="upper left", ncol=2)
    figure.tight_layout()
    figure.savefig(output / "utility.png")
    plt.close(figure)


def targets(arms: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    a, b, c, d = (arms[k]["mean_dice"] or 0.0 for k in "ABCD")
    return [
        {"target": "C beats B", "met": c > b, "numbers": f"C {c:.3f} vs B {b:.3f}"},
        {"target": "D >= A", "met": d >= a, "numbers": f"D {d:.3f} vs A {a:.3f}"},
        {"target": "C >= 0.95 x A", "met": c >= 0.95 * a, "numbers": f"C/A = {c / a:.3f}" if a else "A is 0"},
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="data/demo", help="the real training pairs (prepared when missing)")
    parser.add_argument("--test", help="folder of real NAME_image / NAME_label test pairs (default: voxelmorph)")
    parser.add_argument("--output", default="utility", help="output folder (default: utility)")
    parser.add_argument("--model", help="bundle folder or registered name (default: the bundled model)")
    parser.add_argument("--samples", type=int, default=1, help="samples (deformations) per map for B and C")
    parser.add_argument("--deform", type=float, default=4.0, help="deformation amplitude in mm")
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed (B and C share it)")
    parser.add_argument("--sampling-steps", type=int, help="MedLSDM's sampling steps (default: the sampler's)")
    parser.add_argument("--steps", type=int, default=300, help="segmenter training steps (every arm)")
    parser.add_argument("--patch", type=int, default=64, help="segmenter patch size (every arm)")
    parser.add_argument("--batch", type=int, default=2, help="segmenter batch size (every arm)")
    parser.add_argument("--threads", type=int, help="CPU threads of each command")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    python, output = sys.executable, (REPO / args.output).resolve()
    work, pairs = output / "work", (REPO / args.pairs).resolve()
    if not list(pairs.glob("*_image.nii.gz")):
        run([python, "scripts/prepare_demo_data.py", "--out", str(pairs)])
    maps, test = prepare(work, pairs, Path(args.test).resolve() if args.test else None)
    threads = ["--threads", str(args.threads)] if args.threads else []
    common = [str(maps), "--samples", str(args.samples), "--deform", str(args.deform), "--seed", str(args.seed),
              "--device", args.device, *threads] + (["--model", args.model] if args.model else [])
    run([python, "-m", "MedLSDMLib", "synthesize", *common, "-o", str(work / "B"),
                        "--renderer", str(pairs)])
    steps = ["--steps", str(args.sampling_steps)] if args.sampling_steps else []
    run([python, "-m", "MedLSDMLib", "synthesize", *common, "-o", str(work / "C"), *steps])
    seconds = {"A": 0.0, "B": made_seconds(work / "B"), "C": made_seconds(work / "C")}
    seconds["D"] = seconds["C"]
    data = {"A": pairs, "B": work / "B", "C": work / "C",
            "D": pair_list(work / "D.csv", [pairs, work / "C"])}
    arms: Dict[str, Dict[str, Any]] = {}
    for arm in "ABCD":
        config = segmenter_config(arm, data[arm], work, args)
        segmenter = work / "runs" / arm / "segmenter"
        timing = work / "runs" / arm / "seconds.json"
        if not (segmenter / "segmenter.json").is_file():
            trained = run([python, "-m", "MedLSDMLib", "train", "segmenter", str(config), "--device", args.device,
                           *threads])
            timing.write_text(json.dumps({"training": trained}), encoding="utf-8")
        training = json.loads(timing.read_text(encoding="utf-8"))["training"] if timing.is_file() else 0.0
        from MedLSDMLib.training.data import find_pairs

        result = test_arm(segmenter, test)
        result.update(pairs=len(find_pairs(str(data[arm]))), seconds=seconds[arm] + training,
                      synthesis_seconds=seconds[arm], training_seconds=training)
        arms[arm] = result
        log(f"arm {arm}: mean Dice {result['mean_dice']:.3f} {result['per_class']}")
    report = {
        "arms": arms,
        "targets": targets(arms),
        "settings": {k: v for k, v in vars(args).items()},
        "test_cases": sorted(next(iter(arms.values()))["per_case"]),
        "cpu": cpu_name(),
        "cpu_threads": os.cpu_count(),
    }
    write_outputs(output, report)
    print((output / "utility.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
