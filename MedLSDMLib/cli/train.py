"""``medlsdm train STAGE CONFIG``: one training stage, picked from ``STAGES``."""

from __future__ import annotations

import argparse
import importlib
import os
import time
from typing import Any, Callable, Dict, Tuple

from MedLSDMLib.cli.options import add_reporting_options
from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.hardware import add_threads_option
from MedLSDMLib.runtime.progress import Reporter

NAME = "train"
# stage -> (its Trainer subclass, the settings dataclass its YAML config is read into), as "module:name",
# imported only when the stage runs. A new stage: a Trainer subclass in training/ and its row here.
STAGES: Dict[str, Tuple[str, str]] = {
    "vqgan": ("MedLSDMLib.training.vqgan:VQGANTrainer", "MedLSDMLib.training.config:VQGANRun"),
    "diffusion": ("MedLSDMLib.training.diffusion:DiffusionTrainer", "MedLSDMLib.training.config:DiffusionRun"),
    "segmenter": ("MedLSDMLib.training.segmenter:SegmenterTrainer", "MedLSDMLib.training.segmenter:SegmenterRun"),
}


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="train a VQ-GAN, then a latent diffusion model, on your data",
        description="Train on a folder of NAME_image / NAME_label pairs. Runs unchanged under "
        "torchrun --nproc_per_node=N for several processes or machines.",
    )
    p.add_argument(
        "stage",
        choices=tuple(STAGES),
        help="vqgan first; diffusion reads its bundle; segmenter: the Dice protocol's UNet",
    )
    p.add_argument("config", help="YAML config (examples in Resources/Configs/)")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's output folder")
    p.add_argument("--device", default="auto", help="auto (GPU if available) or cpu")
    add_threads_option(p)
    add_reporting_options(p, progress_help=argparse.SUPPRESS)
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.training.config import load_run_config

    if args.device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {args.device!r}: use auto, cpu or cuda")
    trainer, settings = (_named(path) for path in STAGES[args.stage])
    config = load_run_config(args.config, settings)
    start = time.perf_counter()
    bundle = trainer.run(config, resume=args.resume, device=args.device, cancel=cancel)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {bundle} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def _named(path: str) -> Any:
    """The object a "module:name" path names."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)
