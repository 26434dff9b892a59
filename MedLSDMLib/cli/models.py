"""``medlsdm models``: list the known models, show a model's card, verify a model's files."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from MedLSDMLib.cli.options import add_reporting_options
from MedLSDMLib.runtime.progress import Reporter

NAME = "models"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``models`` (list, info, verify) to the ``medlsdm`` subcommands."""
    p = commands.add_parser(NAME, help="list, describe and verify models")
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,info,verify}")
    actions.add_parser("list", help="models known to this installation").set_defaults(run=run_models_list)
    for name, run, text in (
        ("info", run_models_info, "show a model's card"),
        ("verify", run_models_verify, "check a model's files, hashes and networks"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("model", nargs="?", help="bundle folder or registered name (default: the first)")
        action.set_defaults(run=run)
    add_reporting_options(p, progress_help=argparse.SUPPRESS, debug_help=argparse.SUPPRESS)


def run_models_list(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.models.registry import known_models, models_home, printable

    entries = known_models()
    if not entries:
        print("no models are registered; pass a bundle folder to --model")
    for entry in entries:
        state = "bundled" if entry.path else ("downloaded" if entry.installed() else "available for download")
        print(printable(f"{entry.name} {entry.version} ({state}): {entry.description}"))
    print(f"downloads go to {models_home()} (set MEDLSDM_HOME to change)", file=sys.stderr)
    return 0


def run_models_info(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.models.bundle import read_card
    from MedLSDMLib.models.registry import printable, resolve_model
    from MedLSDMLib.sampling.samplers import samplers_for

    folder = resolve_model(args.model, reporter.progress)
    card = read_card(folder)
    rows = [
        ("model", f"{card.name} {card.version} ({folder})"),
        ("modality", card.modality),
        ("description", card.description),
        ("classes", card.label_names()),
        ("spacing", " x ".join(f"{s:g}" for s in card.spacing) + " mm"),
        ("orientation", card.orientation),
        ("intensity", f"{card.intensity.mode}, [-1, 1] <-> [{card.intensity.low:g}, {card.intensity.high:g}]"),
        ("latent", f"{card.autoencoder.latent_channels} channels at 1/{card.autoencoder.downsample_factor}"),
        (
            "diffusion",
            f"{card.scheduler.kind}, {card.scheduler.num_train_timesteps} steps, "
            f"{card.scheduler.schedule}, {card.scheduler.prediction_type}",
        ),
        ("samplers", ", ".join(samplers_for(card.scheduler))),
        ("guidance", f"{card.default_guidance:g} by default"),
    ]
    rows += [(f"training.{k}", str(v)) for k, v in card.training.items()]
    rows += [(f"metrics.{k}", str(v)) for k, v in card.metrics.items()]
    for key, value in rows:
        print(printable(f"{key:>12}: {value}"))
    return 0


def run_models_verify(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.models.bundle import ModelBundle
    from MedLSDMLib.models.registry import printable, resolve_model

    bundle = ModelBundle.load(resolve_model(args.model, reporter.progress))
    print(
        printable(
            f"OK: {bundle.card.name} {bundle.card.version} at {bundle.path}: hashes match and the weights "
            "fit the networks"
        )
    )
    return 0
