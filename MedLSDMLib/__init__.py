"""MedLSDM: synthetic 3D medical images from segmentations with latent semantic diffusion."""

from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError, ModelError, OutOfMemory

__version__ = "0.1.0"
__all__ = [
    "Generator",
    "ModelBundle",
    "MedLSDMError",
    "InputError",
    "ModelError",
    "OutOfMemory",
    "Cancelled",
    "__version__",
]


def __getattr__(name: str):
    """Import the heavy parts (torch, MONAI) only when they are used."""
    if name == "Generator":
        from MedLSDMLib.generation.pipeline import Generator

        return Generator
    if name == "ModelBundle":
        from MedLSDMLib.models.bundle import ModelBundle

        return ModelBundle
    raise AttributeError(name)
