"""Several samples of one request: each written as soon as it is done, and their voxelwise spread.

The variability map is the voxelwise standard deviation of the K samples (with K − 1 in the denominator)
on the output's grid: bright where the label map leaves the model the most freedom. For an edit it is 0
outside the grown region, where every sample is the real image. The mean map is their voxelwise mean.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.volumes import (
    PathLike,
    StagedImages,
    check_output_path,
    check_outputs,
    check_room_for_files,
    numbered_paths,
)


class VoxelStats:
    """The voxelwise mean and standard deviation of images on one grid, added one at a time (Welford's
    update in float64: images that agree at a voxel give exactly their value and 0 there)."""

    def __init__(self) -> None:
        self.count = 0
        self.grid: Optional[sitk.Image] = None
        self._mean: Optional[np.ndarray] = None
        self._squares: Optional[np.ndarray] = None  # sum of squared differences from the mean

    def add(self, image: sitk.Image) -> None:
        values = sitk.GetArrayFromImage(image).astype(np.float64)
        if self._mean is None or self._squares is None:
            self.grid, self._mean, self._squares = image, np.zeros_like(values), np.zeros_like(values)
        self.count += 1
        delta = values - self._mean
        self._mean += delta / self.count
        self._squares += delta * (values - self._mean)

    def _image(self, values: np.ndarray) -> sitk.Image:
        assert self.grid is not None, "no image was added"
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.CopyInformation(self.grid)
        return image

    def mean(self) -> sitk.Image:
        assert self._mean is not None, "no image was added"
        return self._image(self._mean)

    def std(self) -> sitk.Image:
        """The sample standard deviation (denominator K − 1; needs two images)."""
        assert self._squares is not None and self.count > 1, "the spread needs two images"
        return self._image(np.sqrt(self._squares / (self.count - 1)))


class SampleWriter:
    """The outputs of a request of ``samples`` images: ``OUTPUT`` (or ``OUTPUT_01`` …), and the variability
    and mean maps when asked. ``write(k, image)`` (the engine's ``on_sample``) writes sample k into a hidden
    folder, checked; ``commit`` writes the maps and renames everything into place. Leaving the ``with``
    block without ``commit`` (an error, a cancel) leaves no new file and keeps the existing ones."""

    def __init__(
        self,
        output: PathLike,
        samples: int,
        inputs: Sequence[Optional[PathLike]],
        variability: Optional[PathLike] = None,
        mean: Optional[PathLike] = None,
        progress: Optional[Callable[[str, int, int], None]] = None,
    ) -> None:
        if (variability is not None or mean is not None) and samples < 2:
            raise InputError(
                f"--variability and --mean need --samples 2 or more (got {samples}): they are the spread "
                "and the mean of several samples"
            )
        inputs = [p for p in inputs if p is not None]
        check_room_for_files(check_output_path(output, inputs), samples, "--samples")
        self.paths = numbered_paths(output, samples)
        self.maps = {
            name: Path(path) for name, path in (("variability", variability), ("mean", mean)) if path is not None
        }
        check_outputs(self.paths + list(self.maps.values()), inputs, "--variability, --mean and the outputs")
        self.stats = VoxelStats() if self.maps else None
        self.seeds: List[int] = []
        self.progress = progress
        self._stack = contextlib.ExitStack()
        self._staged: List[StagedImages] = []

    def __enter__(self) -> "SampleWriter":
        # one staged set per map: a map may be in another folder (staged sets rename within one folder)
        for paths in [self.paths] + [[p] for p in self.maps.values()]:
            self._staged.append(self._stack.enter_context(StagedImages(paths)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def write(self, k: int, image: sitk.Image) -> None:
        self._staged[0].write(k, image)
        self.seeds.append(int(image.GetMetaData("medlsdm_seed")))
        if self.stats is not None:
            self.stats.add(image)
        if self.progress is not None:
            self.progress("write", k + 1, len(self.paths))

    def commit(self) -> None:
        if self.stats is not None:
            for staged, name in zip(self._staged[1:], self.maps):
                staged.write(0, self.stats.std() if name == "variability" else self.stats.mean())
        for staged in self._staged:
            staged.commit()
