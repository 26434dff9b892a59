"""Precision and threads chosen by the hardware, with the hardware probes replaced."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.hardware import CpuInfo, choose_precision, probe_cpu, resolve_threads

from conftest import brain_labels, generate_args, run_cli, write
from training_data import pairs  # noqa: F401  (the training data fixture)

AVX2 = CpuInfo(kernels="AVX2", avx512_bf16=False, amx_bf16=False, onednn_bf16=False, physical_cores=2)
AVX512 = CpuInfo(kernels="AVX512", avx512_bf16=False, amx_bf16=False, onednn_bf16=True, physical_cores=4)
AVX512_BF16 = CpuInfo(kernels="AVX512", avx512_bf16=True, amx_bf16=False, onednn_bf16=True, physical_cores=2)
AMX = CpuInfo(kernels="AVX512", avx512_bf16=True, amx_bf16=True, onednn_bf16=True, physical_cores=8)
# AVX512-BF16 in the CPU, but PyTorch limited to its AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
LIMITED = CpuInfo(kernels="AVX2", avx512_bf16=True, amx_bf16=True, onednn_bf16=False, physical_cores=2)


@pytest.mark.parametrize("cpu, expected", [(AVX2, "fp32"), (AVX512, "fp32"), (AVX512_BF16, "fp32"), (AMX, "bf16"),
                                           (LIMITED, "fp32")],
                         ids=["avx2", "avx512", "avx512-bf16", "amx", "limited-kernels"])
def test_auto_on_each_kind_of_cpu(cpu: CpuInfo, expected: str) -> None:
    chosen = choose_precision("auto", "cpu", cpu=lambda: cpu)
    assert chosen.name == expected
    assert chosen.warning is None
    assert cpu.describe() in chosen.reason


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu(has_bf16: bool, expected: str) -> None:
    assert choose_precision("auto", "cuda", cuda_bf16=lambda: has_bf16).name == expected


def test_bf16_asked_for_on_a_cpu_without_native_bf16_runs_with_one_warning() -> None:
    chosen = choose_precision("bf16", "cpu", cpu=lambda: AVX2)
    assert chosen.name == "bf16"
    assert chosen.warning is not None and "\n" not in chosen.warning
    assert "far slower" in chosen.warning and "--precision auto or fp32" in chosen.warning


@pytest.mark.parametrize("cpu", [AVX512_BF16, AMX], ids=["avx512-bf16", "amx"])
def test_bf16_asked_for_on_native_hardware_has_no_warning(cpu: CpuInfo) -> None:
    assert choose_precision("bf16", "cpu", cpu=lambda: cpu).warning is None


def test_fp32_never_warns_and_bad_names_are_refused() -> None:
    assert choose_precision("fp32", "cpu", cpu=lambda: AVX2).warning is None
    assert choose_precision("fp32", "cpu", cpu=lambda: AVX2).dtype is None
    with pytest.raises(InputError, match="unknown precision 'fp64'"):
        choose_precision("fp64", "cpu", cpu=lambda: AVX2)


def test_the_probe_reads_this_machine() -> None:
    cpu = probe_cpu()
    assert cpu.physical_cores >= 1
    assert cpu.kernels
    if not cpu.kernels.startswith("AVX512"):
        assert not cpu.native_bf16


def test_threads_default_to_physical_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(None, cpu=lambda: AMX) == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(None, cpu=lambda: AMX) == 3
    assert resolve_threads(3, cpu=lambda: AMX) == 3
    with pytest.raises(InputError, match="--threads 0"):
        resolve_threads(0)


@pytest.mark.slow
def test_the_first_log_line_names_precision_and_cpu(capfd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    bundle_dir: Path) -> None:
    """On a CPU like AVX2-only laptops, generation picks fp32, says so with the CPU's capability, and
    a bf16 request runs with one warning line."""
    import MedLSDMLib.runtime.hardware as hardware

    monkeypatch.setattr(hardware, "probe_cpu", lambda: AVX2)
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "auto.nii.gz", bundle_dir))
    assert result.code == 0, result.err
    logs: List[str] = [line.split("\r")[-1] for line in result.err.splitlines() if line.strip()]
    assert logs[0].startswith("model tiny-brain"), logs
    assert "precision fp32" in logs[0] and "AVX2 kernels, no native bf16" in logs[0], logs
    result = run_cli(capfd, *generate_args(labels, tmp_path / "bf16.nii.gz", bundle_dir, "--precision", "bf16"))
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "far slower" in warnings[0]


def test_threads_option_sets_torch_threads(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    import torch

    before = torch.get_num_threads()
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    try:
        result = run_cli(capfd, *generate_args(labels, tmp_path / "out.nii.gz", bundle_dir, "--threads", 1, steps=1))
        assert result.code == 0, result.err
        assert "CPU, 1 thread;" in result.err
        result = run_cli(capfd, *generate_args(labels, tmp_path / "bad.nii.gz", bundle_dir, "--threads", 0))
        assert result.code == 2 and result.err.strip() == "medlsdm: error: --threads 0: use 1 or more"
        assert not (tmp_path / "bad.nii.gz").exists()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["brain_t1_vqgan", "brain_t1_diffusion", "brain_t1_segmenter"])
def test_shipped_training_configs_let_the_hardware_choose(name: str) -> None:
    import yaml

    from conftest import REPO

    config = yaml.safe_load((REPO / "Resources" / "Configs" / f"{name}.yaml").read_text(encoding="utf-8"))
    assert config["training"]["precision"] == "auto"


@pytest.mark.slow
def test_training_picks_precision_like_generation(capfd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  pairs: Path) -> None:  # noqa: F811
    """``precision: auto`` trains in fp32 on an AVX2-only CPU and says so in its first line; bf16 asked
    for there trains with one warning."""
    import MedLSDMLib.runtime.hardware as hardware
    from training_data import vqgan_config

    monkeypatch.setattr(hardware, "probe_cpu", lambda: AVX2)
    for precision in ("auto", "bf16"):
        (tmp_path / precision).mkdir()
        config = vqgan_config(tmp_path / precision, pairs, steps=1, precision=precision)
        result = run_cli(capfd, "train", "vqgan", config)
        assert result.code == 0, result.err
        lines = [line.split("\r")[-1] for line in result.err.splitlines() if line.strip()]
        assert lines[0].startswith("training vqgan: CPU, "), lines
        if precision == "auto":
            assert "precision fp32 (CPU without AMX (AVX2 kernels, no native bf16" in lines[0]
            assert not any("warning" in line for line in lines)
        else:
            assert "precision bf16 (asked for)" in lines[0]
            assert sum("warning: --precision bf16" in line for line in lines) == 1
