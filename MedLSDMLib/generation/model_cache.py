"""Loaded models kept for the next request of a long-lived process (the serving worker): a Generator by
bundle folder, the SHA-256 of its model card (which records the weights' SHA-256), device and precision.
Only within ``keeping_models()``; elsewhere (a one-shot command) every load reads and checks the bundle."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

from MedLSDMLib.card import CARD_FILE
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.models.registry import resolve_model
from MedLSDMLib.runtime.progress import ProgressFn

CAPACITY = 2  # models kept at once; the one used longest ago goes first
Key = Tuple[str, str, str, str]

_cache: "OrderedDict[Key, Generator]" = OrderedDict()
_lock = threading.Lock()
_keeping = [False]


@contextmanager
def keeping_models() -> Iterator[None]:
    """Within the block, ``load_generator`` keeps the models it loads; after it, they are forgotten."""
    _keeping[0] = True
    try:
        yield
    finally:
        _keeping[0] = False
        with _lock:
            _cache.clear()


def _key(folder: Path, device: str, precision: str) -> Key:
    try:
        card_hash = hashlib.sha256((folder / CARD_FILE).read_bytes()).hexdigest()
    except OSError:
        card_hash = ""  # no card: Generator.load says what is wrong
    return (str(folder.resolve()), card_hash, device, precision)


def load_generator(
    model: Union[str, Path, None] = None,
    device: str = "auto",
    precision: str = "auto",
    progress: Optional[ProgressFn] = None,
) -> Generator:
    """``Generator.load(model, device, precision)``, or, within ``keeping_models()``, the same model loaded
    before (same folder, same card, same device and precision options)."""
    if not _keeping[0]:
        return Generator.load(model, device, precision, progress)
    folder = resolve_model(None if model is None else str(model), progress)
    key = _key(folder, device, precision)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    generator = Generator.load(folder, device, precision, progress)
    with _lock:
        _cache[key] = generator
        while len(_cache) > CAPACITY:
            _cache.popitem(last=False)
    return generator
