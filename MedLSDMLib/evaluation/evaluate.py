"""Evaluating synthetic images against real ones made from the same label maps: matching the files,
checking them, and computing each case's metrics and the summary (the report's content)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from MedLSDMLib import __version__
from MedLSDMLib.errors import Cancelled, InputError
from MedLSDMLib.evaluation.dice import dice_per_class, mean_defined, per_class_means, ratio
from MedLSDMLib.evaluation.fid import features, frechet_distance, mmd
from MedLSDMLib.evaluation.realism import METHODS as REALISM_METHODS
from MedLSDMLib.evaluation.realism import compare, realism, summarise_realism
from MedLSDMLib.evaluation.similarity import MS_SSIM_WINDOW, SSIM_SIGMA, similarity
from MedLSDMLib.io.geometry import same_grid
from MedLSDMLib.io.volumes import IMAGE_SUFFIXES, image_to_array, read_image, suffix_of

ROLES = {
    "real": ("_image", "_img", "_real"),
    "synthetic": ("_synthetic", "_synth", "_fake", "_generated"),
    "labels": ("_label", "_labels", "_seg"),
}
GRID_TOLERANCE = 1e-3  # mm, and direction cosines: what survives a round trip through NIfTI


class Segmenter(Protocol):
    def describe(self) -> Dict[str, Any]: ...

    def segment_pair(
        self, real: sitk.Image, synthetic: sitk.Image, labels: sitk.Image
    ) -> Tuple[np.ndarray, np.ndarray]: ...


@dataclass
class CaseFiles:
    name: str
    real: Path
    synthetic: Path
    labels: Path


def case_key(path: Path, role: str) -> Optional[str]:
    """The case name of an image file in a folder of ``role``: its name less the format suffix and a
    trailing role word (``_image``, ``_synthetic``, ``_label`` ...); None for a file of another role."""
    suffix = suffix_of(path)
    if suffix not in IMAGE_SUFFIXES:
        return None
    stem = path.name[: len(path.name) - len(suffix)]
    if any(stem.lower().endswith(s) for other, words in ROLES.items() if other != role for s in words):
        return None
    for word in ROLES[role]:
        if stem.lower().endswith(word):
            return stem[: -len(word)]
    return stem


def _index(folder: Path, role: str) -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        key = case_key(path, role) if path.is_file() else None
        if key is None:
            continue
        if key in found:
            raise InputError(
                f"{folder} holds two {role} images for case {key!r} ({found[key].name}, {path.name}): keep one per case"
            )
        found[key] = path
    return found


def match_cases(real: str, synthetic: str, labels: str) -> List[CaseFiles]:
    """Cases from three files, or from three folders matched by case name (see ``case_key``)."""
    paths = {"real": Path(real), "synthetic": Path(synthetic), "labels": Path(labels)}
    for role, path in paths.items():
        if not path.exists():
            raise InputError(f"--{role} {path} does not exist: check the path")
    if all(p.is_file() for p in paths.values()):
        if suffix_of(paths["labels"]) == ".seg.nrrd":
            raise InputError(
                f"--labels {paths['labels'].name} is a Slicer segmentation: export it as a label map "
                "(NIfTI or NRRD) on the real image's grid"
            )
        name = case_key(paths["real"], "real") or paths["real"].name
        return [CaseFiles(name, paths["real"], paths["synthetic"], paths["labels"])]
    if not all(p.is_dir() for p in paths.values()):
        raise InputError("give --real, --synthetic and --labels as three folders (matched by case name) or three files")
    index = {role: _index(path, role) for role, path in paths.items()}
    if not index["real"]:
        raise InputError(f"--real {paths['real']} holds no images (NIfTI, NRRD or MHA)")
    unmatched = [n for n in index["real"] if n not in index["synthetic"] or n not in index["labels"]]
    orphans = [n for n in index["synthetic"] if n not in index["real"]]
    if unmatched or orphans:
        what = (
            f"real case(s) {', '.join(unmatched[:5])} lack a synthetic image or a label map"
            if unmatched
            else f"synthetic image(s) of {', '.join(orphans[:5])} have no real image"
        )
        raise InputError(
            f"{what}: name the files of a case alike (e.g. case1_image.nii.gz, case1_synthetic.nii.gz, "
            "case1_label.nii.gz, or the same name in each folder)"
        )
    return [CaseFiles(n, index["real"][n], index["synthetic"][n], index["labels"][n]) for n in sorted(index["real"])]


def _grid_difference(a: sitk.Image, b: sitk.Image) -> str:
    for what, x, y in (
        ("size", a.GetSize(), b.GetSize()),
        ("spacing", a.GetSpacing(), b.GetSpacing()),
        ("origin", a.GetOrigin(), b.GetOrigin()),
        ("direction", a.GetDirection(), b.GetDirection()),
    ):
        if len(x) != len(y) or not np.allclose(x, y, atol=GRID_TOLERANCE):
            return f"{what} {tuple(round(v, 4) for v in y)} vs {tuple(round(v, 4) for v in x)}"
    return "grids differ"


def load_case(case: CaseFiles) -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """The case's three images, checked: one grid, integer labels with foreground, a usable real image."""
    real = read_image(case.real, "real image")
    synthetic = read_image(case.synthetic, "synthetic image")
    labels = read_image(case.labels, "label map")
    for image, path, what in ((synthetic, case.synthetic, "synthetic image"), (labels, case.labels, "label map")):
        if not same_grid(real, image, GRID_TOLERANCE):
            raise InputError(
                f"case {case.name}: the {what} {path.name} is not on the grid of {case.real.name} "
                f"({_grid_difference(real, image)}): resample it onto the real image"
            )
    values = sitk.GetArrayViewFromImage(labels)
    if not np.issubdtype(values.dtype, np.integer) and not np.array_equal(values, np.round(values)):
        raise InputError(f"case {case.name}: {case.labels.name} has non-integer values: give a label map")
    if not values.any():
        raise InputError(f"case {case.name}: the label map {case.labels.name} has no foreground to evaluate in")
    for image, path in ((real, case.real), (synthetic, case.synthetic)):
        inside = sitk.GetArrayViewFromImage(image)[values != 0]
        if not np.isfinite(inside).all():
            raise InputError(f"case {case.name}: {path.name} has NaN or infinite values inside the label foreground")
    inside = sitk.GetArrayViewFromImage(real)[values != 0]
    if inside.max() == inside.min():
        raise InputError(
            f"case {case.name}: the real image {case.real.name} is constant inside the label foreground, "
            "so it has no data range for PSNR and SSIM"
        )
    return real, synthetic, labels


def _intensity(image: np.ndarray, labels: np.ndarray, value: int) -> Dict[str, float]:
    voxels = image[labels == value]
    return {
        "mean": float(voxels.mean()),
        "std": float(voxels.std()),
        "voxels": int(voxels.size),
        "sum": float(voxels.sum()),
        "sum_squares": float((voxels**2).sum()),
    }


def evaluate_case(
    case: CaseFiles, real: sitk.Image, synthetic: sitk.Image, labels: sitk.Image, segmenter: Segmenter
) -> Dict[str, Any]:
    """One case's similarity, Dice protocol and per-class intensities."""
    r, s = image_to_array(real).astype(np.float64), image_to_array(synthetic).astype(np.float64)
    classes = image_to_array(labels).astype(np.int64)
    mask = classes != 0
    result = similarity(r, s, mask)
    predicted_real, predicted_synthetic = segmenter.segment_pair(real, synthetic, labels)
    present = [int(v) for v in np.unique(classes) if v != 0]
    dice = {
        "real": dice_per_class(predicted_real, classes, present),
        "synthetic": dice_per_class(predicted_synthetic, classes, present),
    }
    spurious = {
        kind: {int(v): int((p == v).sum()) for v in np.unique(p) if v != 0 and int(v) not in present}
        for kind, p in (("real", predicted_real), ("synthetic", predicted_synthetic))
    }
    mean_real, mean_synthetic = mean_defined(dice["real"].values()), mean_defined(dice["synthetic"].values())
    return {
        "name": case.name,
        "real": str(case.real),
        "synthetic": str(case.synthetic),
        "labels": str(case.labels),
        "seed": synthetic.GetMetaData("medlsdm_seed") if synthetic.HasMetaDataKey("medlsdm_seed") else None,
        "psnr": result.psnr,
        "ssim": result.ssim,
        "ms_ssim": result.ms_ssim,
        "data_range": result.data_range,
        "ssim_window": result.ssim_window,
        "ms_ssim_scales": result.ms_ssim_scales,
        "foreground_voxels": result.foreground_voxels,
        "ssim_voxels": result.ssim_voxels,
        "dice": {
            **dice,
            "mean_real": mean_real,
            "mean_synthetic": mean_synthetic,
            "ratio": ratio(mean_synthetic, mean_real),
        },
        "spurious_classes": spurious,
        "intensity": {v: {"real": _intensity(r, classes, v), "synthetic": _intensity(s, classes, v)} for v in present},
        "realism": realism(r, s, classes, real.GetSpacing()),
    }


def _stats(values: List[Optional[float]]) -> Dict[str, Optional[float]]:
    defined = [v for v in values if v is not None]
    if not defined:
        return {"mean": None, "std": None, "cases": 0}
    return {
        "mean": float(np.mean(defined)),
        "std": float(np.std(defined)) if np.isfinite(defined).all() else None,
        "cases": len(defined),
    }


def _pooled(parts: List[Dict[str, float]]) -> Dict[str, float]:
    count = sum(p["voxels"] for p in parts)
    mean = sum(p["sum"] for p in parts) / count
    variance = max(sum(p["sum_squares"] for p in parts) / count - mean**2, 0.0)
    return {"mean": mean, "std": float(np.sqrt(variance)), "voxels": count}


def summarise(cases: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Means over cases; Dice per class over the cases that have the class, then over classes."""
    real = per_class_means([c["dice"]["real"] for c in cases])
    synthetic = per_class_means([c["dice"]["synthetic"] for c in cases])
    mean_real, mean_synthetic = mean_defined(real.values()), mean_defined(synthetic.values())
    classes = sorted({v for c in cases for v in c["intensity"]})
    intensity = {
        v: {
            kind: _pooled([c["intensity"][v][kind] for c in cases if v in c["intensity"]])
            for kind in ("real", "synthetic")
        }
        for v in classes
    }
    return {
        "cases": len(cases),
        "psnr": _stats([c["psnr"] for c in cases]),
        "ssim": _stats([c["ssim"] for c in cases]),
        "ms_ssim": _stats([c["ms_ssim"] for c in cases]),
        "dice": {
            "real": real,
            "synthetic": synthetic,
            "ratio": {v: ratio(synthetic[v], real[v]) for v in real},
            "mean_real": mean_real,
            "mean_synthetic": mean_synthetic,
            "ratio_of_means": ratio(mean_synthetic, mean_real),
        },
        "intensity": intensity,
        "realism": summarise_realism([c["realism"] for c in cases]),
    }


METHODS = {
    "psnr": "10·log10(R² / MSE) in dB over the label map's foreground voxels; R = max − min of the real image "
    "there (infinite for identical images)",
    "ssim": f"mean of MONAI's local SSIM map (Gaussian window 11 voxels, or the largest odd size that fits the "
    f"volume; sigma {SSIM_SIGMA}; k1 0.01, k2 0.03; data range R) over the foreground voxels that are "
    "the centre of a whole window, on the foreground's bounding box plus half a window",
    "ms_ssim": f"MONAI MultiScaleSSIMMetric (Gaussian window {MS_SSIM_WINDOW}, sigma {SSIM_SIGMA}, data range R) on "
    "the foreground's bounding box plus 3 voxels (at least 14 a side where the volume allows), with as many "
    f"of the 5 standard scales as fit (every side >= {MS_SSIM_WINDOW}·2^(scales-1)) and the first weights "
    "of (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) renormalised; not computed below 2 scales",
    "dice": "per foreground class of the label map: 2|P∩G|/(|P|+|G|) of the segmenter's prediction P on the real "
    "and on the synthetic image against the conditioning label map G; background excluded; per class the "
    "mean over the cases that have it, then the mean over classes; ratio = synthetic / real. A class "
    "predicted where the label map has none is listed under spurious_classes (its voxels already lower "
    "the Dice of their true classes)",
    "intensity": "mean and standard deviation of the voxels of each class, per case and pooled over cases",
    "fid": "Fréchet distance between Gaussians fitted to feature rows (one per volume) of the user's 3D ResNet "
    "(global average pool of the last stage; each volume z-scored inside its label foreground); matrix "
    "square root by scipy.linalg.sqrtm; at least two volumes per set",
    "mmd": "MONAI MMDMetric on the same features: unbiased MMD² with a linear kernel",
    **REALISM_METHODS,
}


def evaluate(
    cases: List[CaseFiles],
    segmenter: Segmenter,
    fid_network: Optional[torch.nn.Module] = None,
    fid_info: Optional[Dict[str, Any]] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    baseline: bool = False,
) -> Dict[str, Any]:
    """The whole report: every case, the summary, 3D-FID and MMD (with a feature network), the methods;
    with ``baseline``, the same metrics for the training-free renderer (baseline.py) of each label map
    and which of the two is more realistic."""
    if fid_network is not None and len(cases) < 2:
        raise InputError(
            f"3D-FID needs at least two volumes in each set (got {len(cases)} case): evaluate a "
            "folder of cases, or leave out --fid-weights"
        )
    results, real_rows, synthetic_rows, baseline_results = [], [], [], []
    for index, case in enumerate(cases):
        if cancel is not None and cancel():
            raise Cancelled("cancelled; no report was written")
        real, synthetic, labels = load_case(case)
        results.append(evaluate_case(case, real, synthetic, labels, segmenter))
        if baseline:
            from MedLSDMLib.evaluation.baseline import render

            baseline_results.append(evaluate_case(case, real, render(real, labels, seed=index), labels, segmenter))
        if fid_network is not None:
            mask = image_to_array(labels) != 0
            (r,), (s,) = (
                features(fid_network, [(image_to_array(i).astype(np.float32), mask)]) for i in (real, synthetic)
            )
            real_rows.append(r)
            synthetic_rows.append(s)
        if progress is not None:
            progress("evaluate", index + 1, len(cases))
    summary = summarise(results)
    notes = []
    if fid_network is not None:
        summary["fid"] = frechet_distance(np.stack(real_rows), np.stack(synthetic_rows))
        summary["mmd"] = mmd(np.stack(real_rows), np.stack(synthetic_rows))
        summary["feature_rows"] = len(real_rows)
    else:
        summary["fid"] = summary["mmd"] = None
        notes.append("3D-FID and MMD skipped: no feature network weights (--fid-weights); nothing is downloaded")
    if any(c["ms_ssim"] is None for c in results):
        notes.append("MS-SSIM not computed where the foreground box is too small for 2 scales")
    segmenter_info = segmenter.describe()
    if segmenter_info["kind"] == "mixture":
        notes.append(
            "Dice from the training-free mixture segmenter: a quick check, not the published protocol "
            "(train one with `medlsdm train segmenter` and pass --segmenter FOLDER)"
        )
    report = {
        "medlsdm": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "segmenter": segmenter_info,
        "fid_network": fid_info,
        "methods": METHODS,
        "summary": summary,
        "cases": results,
        "notes": notes,
    }
    if baseline:
        from MedLSDMLib.evaluation.baseline import RULE

        baseline_summary = summarise(baseline_results)
        report["baseline"] = {
            "rule": RULE + " (seed = the case's index)",
            "summary": baseline_summary,
            "cases": [
                {"name": c["name"], "psnr": c["psnr"], "ssim": c["ssim"], "dice": c["dice"], "realism": c["realism"]}
                for c in baseline_results
            ],
        }
        report["comparison"] = compare(
            summary["realism"],
            baseline_summary["realism"],
            summary["dice"]["ratio_of_means"],
            baseline_summary["dice"]["ratio_of_means"],
        )
    return report
