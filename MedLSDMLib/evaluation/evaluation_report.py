"""The evaluation report as Markdown tables (the JSON report holds the same numbers and more)."""

from __future__ import annotations

from typing import Any, Dict, List

from MedLSDMLib.evaluation.report import number, table


def _mean_sd(stats: Dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "—"
    sd = f" ± {number(stats['std'])}" if stats.get("std") is not None and stats["cases"] > 1 else ""
    return f"{number(stats['mean'])}{sd}"


def realism_table(report: Dict[str, Any]) -> List[str]:
    """Per class: histogram distance and sharpness ratio of the synthetic images (and of the baseline's)."""
    r = report["summary"]["realism"]
    b = report["baseline"]["summary"]["realism"] if report.get("baseline") else None
    header = ["class", "histogram distance", "sharpness synthetic / real"]
    if b is not None:
        header += ["baseline histogram distance", "baseline sharpness / real"]
    rows = []
    for v in r["histogram_distance"]:
        row = [str(v), number(r["histogram_distance"][v]), number(r["sharpness_ratio"][v])]
        if b is not None:
            row += [number(b["histogram_distance"].get(v)), number(b["sharpness_ratio"].get(v))]
        rows.append(row)
    row = [
        "all (mean; sharpness over the foreground)",
        number(r["histogram_distance_mean"]),
        number(r["sharpness_ratio_foreground"]),
    ]
    if b is not None:
        row += [number(b["histogram_distance_mean"]), number(b["sharpness_ratio_foreground"])]
    rows.append(row)
    lines = table(header, rows)
    noise = (
        f"Background noise (sd outside the foreground): real {number(r['background_noise_real'])}, "
        f"synthetic {number(r['background_noise_synthetic'])}"
    )
    if b is not None:
        noise += f", baseline {number(b['background_noise_synthetic'])}"
    lines += [
        "",
        noise
        + f". Correlation with the real image in the foreground: {number(r['correlation'])}"
        + (f" (baseline {number(b['correlation'])})" if b is not None else "")
        + ".",
        "",
        f"Background noise over the tissue contrast (brightest minus darkest class mean): real "
        f"{number(r['background_to_contrast_real'])}, synthetic {number(r['background_to_contrast_synthetic'])}"
        + (f", baseline {number(b['background_to_contrast_synthetic'])}" if b is not None else "")
        + f". Class means in the real image's order (tissue contrast right): {r['contrast_order_right']} of "
        f"{r['cases']} case(s)" + "".join(f"; not right: {why}" for why in r.get("contrast_order_why", [])) + ".",
    ]
    return lines


def markdown(report: Dict[str, Any]) -> str:
    s = report["summary"]
    dice = s["dice"]
    segmenter = report["segmenter"]
    who = (
        segmenter["kind"]
        if segmenter["kind"] == "mixture"
        else f"UNet {segmenter.get('name')} ({segmenter.get('path')})"
    )
    lines: List[str] = [
        f"# MedLSDM evaluation ({s['cases']} case{'s' if s['cases'] != 1 else ''})",
        "",
        f"MedLSDM {report['medlsdm']}, {report['created']}; Dice segmenter: {who}.",
        "",
        "## Summary",
        "",
    ]
    fid = report.get("fid_network")
    rows = [
        ["PSNR (dB)", _mean_sd(s["psnr"])],
        ["SSIM", _mean_sd(s["ssim"])],
        ["MS-SSIM", _mean_sd(s["ms_ssim"])],
        ["Dice, real images", number(dice["mean_real"])],
        ["Dice, synthetic images", number(dice["mean_synthetic"])],
        ["Dice ratio synthetic / real", number(dice["ratio_of_means"])],
        ["3D-FID" + (f" ({fid['network']})" if fid else ""), number(s["fid"]) if fid else "skipped"],
        ["MMD² (linear kernel)", number(s["mmd"]) if fid else "skipped"],
    ]
    lines += table(["metric", "value (mean ± sd over cases)"], rows)
    lines += ["", "## Realism (each image z-scored in its foreground)", ""]
    lines += realism_table(report)
    if report.get("comparison"):
        lines += ["", f"**Against the training-free baseline: {report['comparison']['verdict']}.**", ""]
        lines += table(
            ["metric", "model", "baseline renderer", "rule", "more realistic"],
            [
                [r["metric"], number(r["model"]), number(r["baseline"]), r["rule"], r["better"] or "—"]
                for r in report["comparison"]["rows"]
            ],
        )
        lines += ["", f"Baseline: {report['baseline']['rule']}."]
    lines += ["", "## Dice per class", ""]
    lines += table(
        ["class", "real", "synthetic", "ratio"],
        [
            [str(v), number(dice["real"][v]), number(dice["synthetic"].get(v)), number(dice["ratio"].get(v))]
            for v in dice["real"]
        ],
    )
    lines += ["", "## Intensity per class (pooled over cases)", ""]
    lines += table(
        ["class", "real mean", "real sd", "synthetic mean", "synthetic sd", "voxels"],
        [
            [
                str(v),
                number(i["real"]["mean"]),
                number(i["real"]["std"]),
                number(i["synthetic"]["mean"]),
                number(i["synthetic"]["std"]),
                str(i["real"]["voxels"]),
            ]
            for v, i in s["intensity"].items()
        ],
    )
    lines += ["", "## Cases", ""]
    lines += table(
        ["case", "seed", "PSNR (dB)", "SSIM (window)", "MS-SSIM (scales)", "Dice real", "Dice synthetic", "ratio"],
        [
            [
                c["name"],
                str(c["seed"] or "—"),
                number(c["psnr"]),
                f"{number(c['ssim'])} ({c['ssim_window']})",
                f"{number(c['ms_ssim'])} ({c['ms_ssim_scales']})",
                number(c["dice"]["mean_real"]),
                number(c["dice"]["mean_synthetic"]),
                number(c["dice"]["ratio"]),
            ]
            for c in report["cases"]
        ],
    )
    lines += ["", "## How each number was computed", ""]
    lines += [f"- **{name}**: {text}" for name, text in report["methods"].items()]
    rule = segmenter.get(
        "rule",
        "MONAI 3D UNet trained on real pairs; softmax argmax by sliding-window "
        "inference after the training preprocessing, mapped back onto the image grid",
    )
    lines += [f"- **segmenter**: {rule}"]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
