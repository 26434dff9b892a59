"""``medlsdm benchmark`` with the tiny model: exact UNet evaluation counts (reference = 2 × training steps,
guided DDIM = steps), agreement with reference, the outputs, the closing speed-up line, and bad options.
Timings are recorded, never asserted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedLSDMLib.generation.benchmark import DEFAULT_CONFIGS, BenchConfig, check_configs, label_map, parse_config

from conftest import TIMESTEPS, assert_no_output, assert_one_line_error, run_cli, tiny_card


@pytest.mark.slow
@pytest.mark.subprocess
def test_benchmark_counts_unet_evaluations_exactly(capfd, bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_cli(capfd, "benchmark", "--model", bundle_dir, "--size", 16, 16, 16, "--config", "ddim:3:fp32",
                     "--repeats", 1, "--warmup", 0, "--threads", 1, "--device", "cpu", "-o", out, "--progress", "none")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.json", "benchmark.md", "benchmark.png"]
    report = json.loads((out / "benchmark.json").read_text())
    rows = {r["configuration"]: r for r in report["rows"]}
    # reference added (the speed-up) and DDIM with min(50, training steps) (the agreement)
    assert list(rows) == ["ddim 3 fp32", "reference 20 fp32", "ddim 20 auto"]
    ddim, reference, ddim50 = rows["ddim 3 fp32"], rows["reference 20 fp32"], rows["ddim 20 auto"]
    assert ddim["unet_evaluations"] == 3  # one batched guided pass per step
    assert reference["unet_evaluations"] == 2 * TIMESTEPS == 40  # two separate passes per step
    assert reference["steps"] == TIMESTEPS and reference["precision"] == "fp32"
    assert reference["correlation"] == pytest.approx(1.0) and reference["mean_abs_difference"] == 0.0
    assert -1 <= ddim["correlation"] <= 1 and ddim["mean_abs_difference"] > 0
    assert ddim50["correlation_ddim50"] == pytest.approx(1.0) and ddim50["mean_abs_difference_ddim50"] == 0.0
    assert -1 <= ddim["correlation_ddim50"] < 1
    assert ddim50["precision_used"] in ("fp32", "bf16") and ddim["precision_used"] == "fp32"
    rows = {"ddim": ddim, "reference": reference}
    for row in rows.values():
        assert len(row["times"]) == 1 and row["median_seconds"] > 0 and row["peak_bytes"] >= 0
        assert row["memory"] == "growth of ru_maxrss during generation"
    assert rows["ddim"]["speedup"] == pytest.approx(rows["reference"]["median_seconds"] / rows["ddim"]["median_seconds"])
    assert report["context"]["threads"] == 1 and report["context"]["size"] == [16, 16, 16]
    last = result.out_lines[-1]
    assert last.startswith("speed-up of ddim 3 fp32 over reference 20 fp32: ") and last.endswith(" s median)")
    markdown = (out / "benchmark.md").read_text()
    assert "| ddim 3 fp32 | ddim | 3 | fp32 | 3 |" in markdown and "| reference 20 fp32 | reference | 20 | fp32 | 40 |" in markdown


@pytest.mark.parametrize("text, expected", [
    ("ddim:50:bf16", BenchConfig("ddim", 50, "bf16")),
    ("ddim:20", BenchConfig("ddim", 20, "auto")),
    ("dpm:20", BenchConfig("dpm", 20, "auto")),
    ("reference", BenchConfig("reference", None, "fp32")),
    ("ddpm::bf16", BenchConfig("ddpm", None, "bf16")),
])
def test_configurations(text: str, expected: BenchConfig) -> None:
    assert parse_config(text) == expected


def test_default_configurations_resolve_against_the_model() -> None:
    card = tiny_card(timesteps=100)
    configs = check_configs([parse_config(t) for t in ("ddim:50:bf16", "ddim:20:bf16")], card)
    assert [c.label for c in configs] == ["ddim 50 bf16", "ddim 20 bf16", "reference 100 fp32"]
    configs = check_configs([parse_config(t) for t in DEFAULT_CONFIGS], card)
    assert [c.label for c in configs] == ["dpm 20 auto", "dpm 10 auto", "ddim 50 auto", "reference 100 fp32"]
    configs = check_configs([parse_config("dpm:20")], card)
    assert [c.label for c in configs] == ["dpm 20 auto", "reference 100 fp32", "ddim 50 auto"]


def test_label_map_has_the_models_classes_nested() -> None:
    card = tiny_card()
    image = label_map(card, (20, 16, 12))
    array = sitk.GetArrayFromImage(image)
    assert image.GetSize() == (20, 16, 12) and image.GetSpacing() == card.spacing
    assert sorted(np.unique(array)) == [0, 1, 2, 3]
    assert array[6, 8, 10] == 3 and array[0, 0, 0] == 0  # innermost class at the centre


@pytest.mark.subprocess
@pytest.mark.parametrize("extra, words", [
    (["--config", "ddim:50"], ["--steps 50", "at most 20"]),  # the tiny model has 20 training steps
    (["--config", "euler:10"], ["euler", "SAMPLER[:STEPS[:PRECISION]]"]),
    (["--config", "ddim:3:int8"], ["int8", "fp32"]),
    (["--config", "ddim:3", "--config", "ddim:3"], ["listed twice"]),
    (["--config", "ddim:3", "--repeats", "0"], ["--repeats"]),
    (["--config", "ddim:3", "--size", "16", "1", "16"], ["--size", "at least 2"]),
    (["--config", "ddim:3", "--device", "tpu"], ["tpu"]),
])
def test_bad_options_stop_before_any_measurement(capfd, bundle_dir: Path, tmp_path: Path, extra, words) -> None:
    result = run_cli(capfd, "benchmark", "--model", bundle_dir, "--size", 16, 16, 16, "-o", tmp_path / "bench", *extra)
    assert_one_line_error(result, 2, *words)
    assert_no_output(tmp_path, [])
