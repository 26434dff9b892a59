"""Label names: segment and class names match ignoring case, spaces, hyphens and underscores, and a
class is named by its name or by its value written as text. Plain Python: Slicer's process imports it."""

from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

Classes = Sequence[Tuple[int, str]]  # (value, name) of each class, as in the model card's label table


def name_key(name: str) -> str:
    """The form in which names are compared: ``"White-matter"`` and ``"white matter"`` → ``"whitematter"``."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def class_index(text: str, classes: Classes) -> Optional[int]:
    """Position in ``classes`` of the class that ``text`` names (its name, else its value), or None."""
    key = name_key(text)
    for index, (_, name) in enumerate(classes):
        if name_key(name) == key:
            return index
    if re.fullmatch(r"-?\d+", text.strip()):
        for index, (value, _) in enumerate(classes):
            if value == int(text):
                return index
    return None
