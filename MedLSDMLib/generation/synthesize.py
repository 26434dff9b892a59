"""A synthetic training set: many label maps x K samples, each an image/label pair, in one job.

The job is a fixed list of items (map by map, sample by sample); item i uses noise seed ``seed + i``
and, with a deformation, the same number for its deformation (a numpy generator, apart from the
noise's torch one), so the set depends only on the maps, the options and the seed. A shard ``I/N``
takes the items whose index is I modulo N: N shards into one folder make exactly the set one process
makes. Every finished pair is in ``manifest.csv`` (manifest.py); a rerun skips the pairs whose row
matches the job and whose files match their hashes, and makes the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.card import CARD_FILE
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError
from MedLSDMLib.evaluation.baseline import class_statistics, render_classes
from MedLSDMLib.generation.manifest import Manifest, pair_paths, relative, write_dataset_json
from MedLSDMLib.generation.options import MAX_SEED
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.io.deform import deform_labels
from MedLSDMLib.io.labels import LabelTable, class_image
from MedLSDMLib.io.mapfile import MapFile
from MedLSDMLib.io.maplist import MapEntry
from MedLSDMLib.io.volumes import StagedImages, array_to_image, image_to_array, read_image
from MedLSDMLib.models.bundle import sha256
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn

Shard = Tuple[int, int]  # (index I, count N): the items i with i % N == I


class Item(NamedTuple):
    number: int  # position in the whole job
    entry: MapEntry
    sample: int  # 1 ... K
    name: str  # NAME_sNN
    seed: int  # the noise seed, and the deformation's


def job_items(entries: Sequence[MapEntry], samples: int, seed: int) -> List[Item]:
    """Every item of the job in its fixed order: map by map, sample 1 ... K of each."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InputError(f"--samples {samples}: the number of samples per map must be at least 1")
    count = len(entries) * samples
    if not 0 <= seed <= MAX_SEED - count:
        raise InputError(f"--seed {seed}: give a whole number from 0 to {MAX_SEED - count} (item i uses seed + i)")
    width = max(2, len(str(samples)))
    return [
        Item(m * samples + k, entry, k + 1, f"{entry.name}_s{k + 1:0{width}d}", seed + m * samples + k)
        for m, entry in enumerate(entries)
        for k in range(samples)
    ]


def parse_shard(text: str) -> Shard:
    """``--shard I/N`` (I from 0 to N-1), or InputError."""
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        shard = (-1, 0)
    if not 0 <= shard[0] < shard[1]:
        raise InputError(
            f"--shard {text}: give I/N with 0 <= I < N, e.g. --shard 0/4 ... --shard 3/4 "
            "(a SLURM array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )
    return shard


def torchrun_shard(environ: Mapping[str, str]) -> Optional[Shard]:
    """The shard of a process that torchrun started (RANK of WORLD_SIZE), or None outside torchrun."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        return parse_shard(f"{int(environ['RANK'])}/{int(environ['WORLD_SIZE'])}")
    except ValueError:
        raise InputError(
            f"RANK={environ['RANK']!r} and WORLD_SIZE={environ['WORLD_SIZE']!r} are not whole numbers: "
            "start the job with torchrun, or without these variables"
        ) from None


def torchrun_device(device: str, environ: Mapping[str, str], cuda: bool) -> str:
    """Under torchrun each process takes its own GPU (cuda:LOCAL_RANK) when the device is auto or cuda
    and there is a GPU; otherwise the device as given."""
    if "LOCAL_RANK" in environ and device in ("auto", "cuda", "gpu") and cuda:
        return f"cuda:{int(environ['LOCAL_RANK'])}"
    return device


class Producer:
    """What turns a (deformed) map of class indices into an image: the model or the renderer."""

    table: LabelTable
    settings: Dict[str, str]  # generator, generator_sha256, sampler, steps, guidance

    def produce(
        self,
        classes: sitk.Image,
        seed: int,
        progress: Optional[ProgressFn],
        cancel: Optional[CancelFn],
        log: Optional[Callable[[str], None]],
    ) -> sitk.Image:
        raise NotImplementedError


class ModelProducer(Producer):
    """A loaded model, with the sampling options settled once for the whole job."""

    def __init__(
        self,
        generator: Generator,
        sampler: Optional[str] = None,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        max_memory: Optional[float] = None,
    ) -> None:
        self.generator, self.table, self.max_memory = generator, generator.table, max_memory
        run = generator.settle(sampler, steps, guidance, 0, 1, max_memory, None, None)
        card = generator.card
        card_file = Path(generator.bundle.path or ".") / CARD_FILE
        self.settings = {
            "generator": f"{card.name} {card.version}",
            "generator_sha256": sha256(card_file) if card_file.is_file() else "",
            "sampler": run.sampler,
            "steps": str(run.steps),
            "guidance": f"{run.guidance:g}",
        }

    def produce(
        self,
        classes: sitk.Image,
        seed: int,
        progress: Optional[ProgressFn],
        cancel: Optional[CancelFn],
        log: Optional[Callable[[str], None]],
    ) -> sitk.Image:
        images = self.generator.generate(
            class_values(classes, self.table),
            sampler=self.settings["sampler"],
            steps=int(self.settings["steps"]),
            guidance=float(self.settings["guidance"]),
            seed=seed,
            max_memory=self.max_memory,
            progress=progress,
            cancel=cancel,
            log=log,
        )
        return images[0]


class RendererProducer(Producer):
    """The training-free renderer (evaluation/baseline.py) with the class statistics of real image/label
    pairs: each item renders with those of one pair, drawn by its seed."""

    def __init__(self, table: LabelTable, pairs: Sequence[Tuple[Path, Path]]) -> None:
        self.table = table
        self.statistics: List[Tuple[str, Dict[int, Tuple[float, float]]]] = []
        for image_path, label_path in pairs:
            image = read_image(image_path, "renderer image")
            classes = class_image(label_path, table)
            if image.GetSize() != classes.GetSize():
                raise InputError(
                    f"renderer pair {image_path.name} and {label_path.name} differ in size: "
                    "give image/label pairs on one grid"
                )
            statistics = class_statistics(image_to_array(image), image_to_array(classes))
            self.statistics.append((image_path.name, statistics))
        digest = hashlib.sha256(json.dumps([s for _, s in self.statistics], sort_keys=True).encode("utf-8"))
        self.settings = {
            "generator": "renderer",
            "generator_sha256": digest.hexdigest(),
            "sampler": "",
            "steps": "",
            "guidance": "",
        }

    def produce(
        self,
        classes: sitk.Image,
        seed: int,
        progress: Optional[ProgressFn],
        cancel: Optional[CancelFn],
        log: Optional[Callable[[str], None]],
    ) -> sitk.Image:
        name, statistics = self.statistics[int(np.random.default_rng(seed).integers(len(self.statistics)))]
        array = image_to_array(classes)
        missing = [self.table.entries[int(c)].name for c in np.unique(array) if int(c) not in statistics]
        if missing:
            raise InputError(
                f"renderer pair {name} has no voxel of class(es) {', '.join(missing)}: give pairs with every class"
            )
        image = array_to_image(render_classes(array, statistics, seed), classes)
        image.SetMetaData("medlsdm_model", f"baseline renderer ({name})")
        image.SetMetaData("medlsdm_seed", str(seed))
        return image


def class_values(classes: sitk.Image, table: LabelTable) -> sitk.Image:
    """A map of class indices as the model's label values (what the written label holds)."""
    values = np.array([e.value for e in table.entries])
    array = values[sitk.GetArrayViewFromImage(classes)]
    image = sitk.GetImageFromArray(array.astype(np.uint8 if values.max() < 256 else np.uint16))
    image.CopyInformation(classes)
    return image


@dataclass
class Summary:
    total: int = 0  # items of this shard
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, Tuple[int, str]] = field(default_factory=dict)  # source name -> (items, message)
    cancelled: bool = False
    seconds: float = 0.0

    def lines(self) -> List[str]:
        failed = sum(count for count, _ in self.failed.values())
        lines = [
            f"{len(self.done)} made, {len(self.skipped)} already done, {failed} failed"
            f"{', cancelled' if self.cancelled else ''} of {self.total} pairs in {self.seconds:.0f} s"
        ]
        lines += [f"failed: {name} ({count} pair(s)): {message}" for name, (count, message) in self.failed.items()]
        return lines


@dataclass
class SynthesisJob:
    """One process's part of a job: its items, where they go, and how each is made."""

    items: List[Item]
    output: Path
    producer: Producer
    layout: str = "plain"
    deform: float = 0.0
    mapping: Mapping[str, str] = field(default_factory=dict)
    map_file: Union[MapFile, None] = None
    modality: str = "MRI"

    def run(
        self,
        progress: Optional[ProgressFn] = None,
        log: Optional[Callable[[str], None]] = None,
        cancel: Optional[CancelFn] = None,
        step_progress: Optional[ProgressFn] = None,
    ) -> Summary:
        """Make every item not already done; a failing map fails its items and the others go on; a cancel
        ends after the pairs finished so far (kept). ``progress('synthesize', n, total)`` after each item,
        ``log`` one line per item (with the time left), ``step_progress`` the sampling steps of each."""
        start = time.perf_counter()
        manifest = Manifest(self.output)
        for path in pair_paths(self.output, self.layout, "x"):
            path.parent.mkdir(parents=True, exist_ok=True)
        rows = manifest.rows()
        summary = Summary(total=len(self.items))
        maps: Dict[str, Union[sitk.Image, MedLSDMError]] = {}
        made_seconds: List[float] = []
        for position, item in enumerate(self.items, 1):
            if cancel is not None and cancel():
                summary.cancelled = True
                break
            settings = self.settings(item)
            began = time.perf_counter()
            if manifest.is_done(rows.get(item.name), settings):
                summary.skipped.append(item.name)
                status = "already done"
            else:
                try:
                    self._make(item, settings, maps, manifest, step_progress, cancel, log if not made_seconds else None)
                except Cancelled:
                    summary.cancelled = True
                    break
                except MedLSDMError as exc:
                    count, _ = summary.failed.get(item.entry.name, (0, ""))
                    summary.failed[item.entry.name] = (count + 1, str(exc))
                    status = f"failed: {exc}"
                else:
                    made_seconds.append(time.perf_counter() - began)
                    summary.done.append(item.name)
                    status = f"{made_seconds[-1]:.1f} s"
            left = (len(self.items) - position) * (float(np.mean(made_seconds)) if made_seconds else 0.0)
            if progress is not None:
                progress("synthesize", position, len(self.items))
            if log is not None:
                log(f"[{position}/{len(self.items)}] {item.name}: {status}; about {_duration(left)} left")
        if self.layout == "nnunet" and not summary.cancelled:
            classes = [(e.name, e.value) for e in self.producer.table.entries]
            write_dataset_json(self.output, classes, self.modality, len(manifest.rows()))
        summary.seconds = time.perf_counter() - start
        return summary

    def settings(self, item: Item) -> Dict[str, str]:
        """The manifest columns that say how ``item`` is made."""
        return {
            "name": item.name,
            "source": str(item.entry.path),
            "sample": str(item.sample),
            "noise_seed": str(item.seed),
            "deform_seed": str(item.seed) if self.deform else "",
            "deform_mm": f"{self.deform:g}",
            **self.producer.settings,
        }

    def _classes(self, entry: MapEntry, maps: Dict[str, Union[sitk.Image, MedLSDMError]]) -> sitk.Image:
        """The map as class indices, read once (the last map only: a map's items come one after another)."""
        if entry.name not in maps:
            maps.clear()
            try:
                mapping = {**self.mapping, **dict(entry.mapping)}
                maps[entry.name] = class_image(entry.path, self.producer.table, mapping, self.map_file)
            except MedLSDMError as exc:
                maps[entry.name] = exc
        found = maps[entry.name]
        if isinstance(found, MedLSDMError):
            raise found
        return found

    def _make(
        self,
        item: Item,
        settings: Dict[str, str],
        maps: Dict[str, Union[sitk.Image, MedLSDMError]],
        manifest: Manifest,
        step_progress: Optional[ProgressFn],
        cancel: Optional[CancelFn],
        log: Optional[Callable[[str], None]],
    ) -> None:
        began = time.perf_counter()
        classes = self._classes(item.entry, maps)
        if self.deform:
            classes = deform_labels(classes, self.deform, item.seed)
        image = self.producer.produce(classes, item.seed, step_progress, cancel, log)
        paths = list(pair_paths(self.output, self.layout, item.name))
        with StagedImages(paths) as staged:
            staged.write(0, image)
            staged.write(1, class_values(classes, self.producer.table))
            staged.commit()
        image_path, label_path = relative(self.output, paths)
        manifest.append(
            {
                **settings,
                "seconds": f"{time.perf_counter() - began:.2f}",
                "image": image_path,
                "label": label_path,
                "image_sha256": sha256(paths[0]),
                "label_sha256": sha256(paths[1]),
            }
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
