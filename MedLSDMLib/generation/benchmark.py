"""The speed benchmark: each sampler / step count / precision generates from a synthetic label map in a
process of its own, which reports wall times, peak memory, UNet evaluations and its output; the parent
compares each output with the ``reference`` sampler's at the same seed and writes a table and a plot.

Memory is measured honestly for what it is: on the CPU, the growth of the process's peak resident set
size (``ru_maxrss``) from just before the first generation to the end (what generation needs beyond the
loaded model, PyTorch's allocator caches included); on a GPU, ``torch.cuda.max_memory_allocated`` (the
weights included, as they move to the GPU in the first generation).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.card import ModelCard
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError
from MedLSDMLib.runtime.hardware import PRECISION_NAMES, probe_cpu
from MedLSDMLib.sampling.samplers import SAMPLERS, resolve_steps

DEFAULT_CONFIGS = ("dpm:20", "dpm:10", "ddim:50", "reference")
DDIM_STEPS = 50  # DDIM-50: the quality every faster configuration is compared with


@dataclass(frozen=True)
class BenchConfig:
    sampler: str
    steps: Optional[int]  # None: the sampler's own (every training step for ddpm and reference)
    precision: str

    @property
    def label(self) -> str:
        return f"{self.sampler} {self.steps} {self.precision}" if self.steps else f"{self.sampler} {self.precision}"


def parse_config(text: str) -> BenchConfig:
    """``SAMPLER[:STEPS[:PRECISION]]``: reference defaults to fp32 (the published code), others to auto
    (chosen by the hardware, as generate does)."""
    parts = text.split(":")
    if len(parts) > 3 or parts[0] not in SAMPLERS:
        raise InputError(
            f"--config {text!r}: write SAMPLER[:STEPS[:PRECISION]] with a sampler of "
            f"{', '.join(SAMPLERS)}, e.g. dpm:20, ddim:50:fp32 or reference"
        )
    steps = None
    if len(parts) > 1 and parts[1] not in ("", "all"):
        if not parts[1].isdigit():
            raise InputError(f"--config {text!r}: the step count {parts[1]!r} is not a whole number")
        steps = int(parts[1])
    precision = parts[2] if len(parts) > 2 else ("fp32" if parts[0] == "reference" else "auto")
    if precision not in PRECISION_NAMES:
        raise InputError(f"--config {text!r}: precision {precision!r} is not one of {', '.join(PRECISION_NAMES)}")
    return BenchConfig(parts[0], steps, precision)


def check_configs(configs: List[BenchConfig], card: ModelCard) -> List[BenchConfig]:
    """Each config resolved against the model (steps filled in); ``reference`` and ``ddim:50`` (what the
    others' agreement is measured against) added when missing."""
    if not any(c.sampler == "reference" for c in configs):
        configs = configs + [parse_config("reference")]
    if card.scheduler.kind == "ddpm" and not any(_is_ddim50(c, card) for c in configs):
        configs = configs + [parse_config(f"ddim:{min(DDIM_STEPS, card.scheduler.num_train_timesteps)}")]
    resolved = [BenchConfig(c.sampler, resolve_steps(c.sampler, c.steps, card.scheduler), c.precision) for c in configs]
    if len(set(resolved)) != len(resolved):
        raise InputError("--config: a configuration is listed twice")
    return resolved


def _is_ddim50(config: BenchConfig, card: ModelCard) -> bool:
    steps = config.steps or resolve_steps(config.sampler, None, card.scheduler)
    return config.sampler == "ddim" and steps == min(DDIM_STEPS, card.scheduler.num_train_timesteps)


def label_map(card: ModelCard, size: Sequence[int]) -> sitk.Image:
    """Nested ellipsoids of the model's foreground classes (outermost first) on a grid of ``size`` voxels
    at the model's spacing."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in size], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    foreground = [e.value for e in card.labels if e.value != 0]
    array = np.zeros(tuple(size), dtype=np.int16)
    for k, value in enumerate(foreground):
        array[radius < 0.95 * (1 - k / (len(foreground) + 1))] = value
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in card.spacing])
    return image


# ------------------------------------------------------------------------------------------------
# One configuration, in its own process
# ------------------------------------------------------------------------------------------------


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one configuration (``spec`` from ``run_benchmark``) and return its measurements; the output
    volume of the last run is saved to spec["output"] (.npy) for the agreement with reference."""
    import torch

    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.runtime.devices import resolve_device, resolve_precision
    from MedLSDMLib.runtime.hardware import set_threads

    set_threads(spec.get("threads"))
    generator = Generator.load(spec["model"], spec["device"], spec["precision"])
    used = resolve_precision(spec["precision"], resolve_device(spec["device"])).name
    labels = label_map(generator.card, spec["size"])
    calls = [0]
    hook = generator.bundle.unet.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    cuda = spec["device"] != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_rss_bytes()
    times: List[float] = []
    evaluations: List[int] = []
    image: Optional[sitk.Image] = None
    for run in range(spec["warmup"] + spec["repeats"]):
        calls[0] = 0
        start = time.perf_counter()
        (image,) = generator.generate(labels, sampler=spec["sampler"], steps=spec["steps"], seed=spec["seed"])
        if cuda:
            torch.cuda.synchronize()
        if run >= spec["warmup"]:
            times.append(time.perf_counter() - start)
        evaluations.append(calls[0])
    hook.remove()
    assert image is not None, "at least one run"
    np.save(spec["output"], sitk.GetArrayFromImage(image))
    peak = int(torch.cuda.max_memory_allocated()) if cuda else max(_peak_rss_bytes() - baseline, 0)
    return {
        "times": times,
        "evaluations": evaluations,
        "peak_bytes": peak,
        "memory": "torch.cuda.max_memory_allocated (weights included)"
        if cuda
        else "growth of ru_maxrss during generation",
        "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "precision_used": used,
    }


def _worker(argv: List[str]) -> int:
    """``python -m MedLSDMLib.generation.benchmark SPEC.json RESULT.json``: one configuration; errors go in RESULT."""
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result: Dict[str, Any] = measure(spec)
    except MedLSDMError as exc:
        result = {"error": {"kind": exc.kind, "exit_code": exc.exit_code, "message": str(exc)}}
    except Exception as exc:  # reported by the parent as one line
        result = {"error": {"kind": "internal", "exit_code": 1, "message": f"unexpected {type(exc).__name__}: {exc}"}}
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _raise(error: Dict[str, Any], label: str) -> None:
    kinds = {cls.kind: cls for cls in (InputError, Cancelled, MedLSDMError) + tuple(MedLSDMError.__subclasses__())}
    cls = kinds.get(error["kind"], MedLSDMError)
    raise cls(f"benchmark {label}: {error['message']}")


def run_one(spec: Dict[str, Any], label: str, scratch: Path, cancel: Optional[Callable[[], bool]]) -> Dict[str, Any]:
    """Run ``measure`` in a child process; ending it if cancelled."""
    spec_path, result_path = scratch / f"{label}.spec.json", scratch / f"{label}.result.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, "-m", "MedLSDMLib.generation.benchmark", str(spec_path), str(result_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while child.poll() is None:
            if cancel is not None and cancel():
                raise Cancelled("benchmark cancelled; no report was written")
            time.sleep(0.05)
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
    stderr = child.stderr.read() if child.stderr else ""
    if not result_path.is_file():
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise MedLSDMError(f"benchmark {label}: the measuring process ended with code {child.returncode} ({last})")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    if "error" in result:
        _raise(result["error"], label)
    return result


def agreement(output: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """Pearson correlation and mean absolute difference inside the label map's foreground."""
    a, b = output[mask].astype(np.float64), reference[mask].astype(np.float64)
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    from MedLSDMLib.evaluation.realism import (
        realism,
    )

    r = realism(reference, output, mask.astype(np.int64), (1.0, 1.0, 1.0))
    return {
        "correlation": correlation,
        "mean_abs_difference": float(np.abs(a - b).mean()),
        "histogram_distance": r["histogram_distance_mean"],
        "sharpness_ratio": r["sharpness"]["foreground_ratio"],
        "background_noise": r["background_noise"]["synthetic"],
    }


def run_benchmark(
    model: str,
    card: ModelCard,
    configs: List[BenchConfig],
    size: Sequence[int],
    *,
    seed: int = 0,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "auto",
    threads: Optional[int] = None,
    log: Optional[Callable[[str], None]] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> Dict[str, Any]:
    """Measure every configuration (``threads``: PyTorch's CPU threads, default its own choice); the rows,
    each with its agreement with and speed-up over the reference configuration, and the context."""
    mask = sitk.GetArrayFromImage(label_map(card, size)) != 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="medlsdm-benchmark-") as scratch_name:
        scratch = Path(scratch_name)
        outputs = {}
        for index, config in enumerate(configs):
            label = config.label.replace(" ", "_")
            output = scratch / f"{label}.npy"
            spec: Dict[str, Any] = {
                "model": model,
                "device": device,
                "precision": config.precision,
                "sampler": config.sampler,
                "steps": config.steps,
                "size": list(size),
                "seed": seed,
                "repeats": repeats,
                "warmup": warmup,
                "threads": threads,
                "output": str(output),
            }
            if log is not None:
                log(f"measuring {config.label}: {warmup} warm-up + {repeats} timed run(s)")
            result = run_one(spec, label, scratch, cancel)
            outputs[config] = np.load(output)
            rows.append(
                {
                    "configuration": config.label,
                    **asdict(config),
                    **result,
                    "unet_evaluations": result["evaluations"][-1],
                    "median_seconds": statistics.median(result["times"]),
                }
            )
            if progress is not None:
                progress("benchmark", index + 1, len(configs))
    reference = next(r for r, c in zip(rows, configs) if c.sampler == "reference")
    reference_output = outputs[next(c for c in configs if c.sampler == "reference")]
    ddim50 = next((c for c in configs if _is_ddim50(c, card)), None)
    for row, config in zip(rows, configs):
        row.update(agreement(outputs[config], reference_output, mask))
        if ddim50 is not None:
            row.update({f"{k}_ddim50": v for k, v in agreement(outputs[config], outputs[ddim50], mask).items()})
        row["speedup"] = reference["median_seconds"] / row["median_seconds"]
    import torch

    context = {
        "model": card.name,
        "version": card.version,
        "size": list(size),
        "seed": seed,
        "repeats": repeats,
        "warmup": warmup,
        "device": rows[0]["device"],
        "threads": rows[0]["threads"],
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory": rows[0]["memory"],
        "cpu": probe_cpu().describe(),
    }
    return {"context": context, "rows": rows}


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
