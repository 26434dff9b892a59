"""The worker's command line, built in one place for generate and edit (a list: never a shell string)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union

from .engine import GenerationError

PathLike = Union[str, "os.PathLike[str]"]
DEVICES = {"auto": "auto", "gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}


def workerCommand(python: str, inputs: Sequence[PathLike], output: PathLike, *, command: Optional[str] = None,
                  extra: Sequence[str] = (), model: Optional[str] = None, steps: Optional[int] = None,
                  guidance: Optional[float] = None, seed: Optional[int] = None, samples: int = 1,
                  device: str = "auto", mapArgs: Sequence[str] = (), mapFile: Optional[PathLike] = None) -> List[str]:
    """``python -m MedLSDMLib.worker [COMMAND] INPUTS... -o OUTPUT EXTRA... OPTIONS...``.

    Args:
        python: the Python that runs the worker.
        inputs: the command's input files, in its order.
        output: the output file.
        command: the worker's command (``edit``), or None for generate (the worker's default).
        extra: the command's own options.
        model, steps, guidance, seed, samples: the sampling options (None: the engine's default).
        device: auto, GPU or CPU (any case), or cuda.
        mapArgs: ``VALUE=CLASS`` pairs, each passed as ``--map``.
        mapFile: a mapping file (or a shipped table's name), passed as ``--map-file``.

    Returns:
        The arguments, the program first.
    """
    if device.lower() not in DEVICES:
        raise GenerationError(f"unknown device {device!r}: use auto, GPU or CPU")
    args = [python, "-m", "MedLSDMLib.worker", *([command] if command else []), *map(str, inputs), "-o", str(output),
            *extra, "--device", DEVICES[device.lower()], "--samples", str(int(samples))]
    for flag, value in (("--model", model), ("--steps", steps), ("--guidance", guidance), ("--seed", seed)):
        if value is not None:
            args += [flag, str(value)]
    if mapFile is not None:
        args += ["--map-file", str(mapFile)]
    for pair in mapArgs:
        args += ["--map", pair]
    return args
