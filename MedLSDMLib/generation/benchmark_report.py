"""The benchmark's outputs: benchmark.json, benchmark.md (a table) and benchmark.png (time per
configuration), written atomically into an output folder, and the closing speed-up line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from MedLSDMLib.evaluation.report import number, table, to_json, write_files
from MedLSDMLib.runtime.interrupt import staged_file


def markdown(result: Dict[str, Any]) -> str:
    c = result["context"]
    lines = [
        f"# MedLSDM benchmark: {c['model']} {c['version']}, {'x'.join(map(str, c['size']))} voxels",
        "",
        f"{c['device']} ({c['threads']} threads, {c['cpus']} CPUs, {c['machine']}), torch {c['torch']}; "
        f"median of {c['repeats']} run(s) after {c['warmup']} warm-up; seed {c['seed']}. Peak memory: "
        f"{c['memory']}. CPU: {c.get('cpu', 'not recorded')}. Agreement: with DDIM-50's and with the "
        "reference sampler's output at the same seed, inside the label "
        "map's foreground; histogram distance, sharpness and background noise as in `medlsdm evaluate` (realism.py), "
        "with the reference sampler's output in place of the real image.",
        "",
    ]
    return "\n".join(lines + rows_table(result) + ["", speedup_line(result)]) + "\n"


def rows_table(result: Dict[str, Any]) -> List[str]:
    """The Markdown table: one row per configuration."""
    rows = [
        [
            r["configuration"],
            r["sampler"],
            str(r["steps"]),
            _precision(r),
            str(r["unet_evaluations"]),
            f"{r['median_seconds']:.3f}",
            f"{min(r['times']):.3f}–{max(r['times']):.3f}",
            f"{r['peak_bytes'] / 2**20:.0f}",
            number(r.get("correlation_ddim50")),
            number(r["correlation"]),
            number(r["mean_abs_difference"]),
            number(r.get("histogram_distance")),
            number(r.get("sharpness_ratio")),
            number(r.get("background_noise")),
            f"{r['speedup']:.2f}×",
        ]
        for r in result["rows"]
    ]
    return table(
        [
            "configuration",
            "sampler",
            "steps",
            "precision",
            "UNet evaluations",
            "median s",
            "range s",
            "peak MiB",
            "correlation with DDIM-50",
            "correlation with reference",
            "mean abs. difference",
            "histogram distance to reference",
            "sharpness / reference",
            "background noise",
            "speed-up",
        ],
        rows,
    )


def _precision(row: Dict[str, Any]) -> str:
    used = row.get("precision_used", row["precision"])
    return used if used == row["precision"] else f"{row['precision']} → {used}"


def speedup_line(result: Dict[str, Any]) -> str:
    """The speed-up of the first configuration given (by default the generate default) over reference."""
    rows: List[Dict[str, Any]] = result["rows"]
    reference = next(r for r in rows if r["sampler"] == "reference")
    first = next((r for r in rows if r["sampler"] != "reference"), reference)
    return (
        f"speed-up of {first['configuration']} over {reference['configuration']}: {first['speedup']:.1f}x "
        f"({first['median_seconds']:.3f} s vs {reference['median_seconds']:.3f} s median)"
    )


def _plot_png(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.5 * len(rows)))
    medians = [r["median_seconds"] for r in rows]
    errors = [
        [m - min(r["times"]) for m, r in zip(medians, rows)],
        [max(r["times"]) - m for m, r in zip(medians, rows)],
    ]
    colours = ["tab:red" if r["sampler"] == "reference" else "tab:blue" for r in rows]
    axis.barh(range(len(rows)), medians, xerr=errors, color=colours)
    axis.set_yticks(range(len(rows)), [f"{r['configuration']} ({r['unet_evaluations']} evals)" for r in rows])
    axis.invert_yaxis()
    axis.set_xlabel("seconds per volume (median, bars: min-max)")
    c = result["context"]
    axis.set_title(f"{c['model']}, {'x'.join(map(str, c['size']))} voxels, {c['device']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_benchmark(result: Dict[str, Any], folder: Path) -> List[Path]:
    """benchmark.json, benchmark.md and benchmark.png, each complete or not there."""
    folder.mkdir(exist_ok=True)
    png = folder / "benchmark.png"
    with staged_file(png) as temporary:
        _plot_png(result, temporary)
        written = write_files({folder / "benchmark.json": to_json(result), folder / "benchmark.md": markdown(result)})
    return written + [png]
