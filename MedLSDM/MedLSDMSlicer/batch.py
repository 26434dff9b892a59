"""A batch into a folder: every input through one ``medlsdm synthesize`` job, one request to the serving worker
(one model load), and each input's outcome read back from the job's manifest or its summary line."""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .engine import GenerationError
from .models import PathLike
from .running import GenerationTask, LogCallback, _Job

LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
FAILED_LINE = re.compile(r"failed: (.+?) \(\d+ pair\(s\)\): (.*)$")  # a failing map in the job's summary


@dataclass
class BatchItem:
    """The outcome of one input of a batch."""

    input: str
    ok: bool
    output: List[Any]
    message: str = ""

    def __str__(self) -> str:
        if not self.ok:
            return f"FAILED {self.input}: {self.message}"
        names = [o if isinstance(o, str) else o.GetName() for o in self.output]
        return f"ok     {self.input} -> {', '.join(names)}"


def outputName(source: str) -> str:
    """A file or node name as an output name: no label-map suffix, only word characters, '-' and '.'."""
    for suffix in LABEL_SUFFIXES:
        if source.lower().endswith(suffix):
            source = source[: -len(suffix)]
            break
    return re.sub(r"[^\w\-.]+", "_", source).strip("_") or "segmentation"


class FolderBatches:
    """The logic's batch into a folder (a mixin of GenerationLogic; the export and the worker runs are its
    other mixins')."""

    debug = False

    def _synthesizeBatch(self, inputs: Sequence[Any], outputFolder: Path, mapping: Optional[Mapping[str, str]],
                         mapFile: Optional[PathLike], logCallback: Optional[LogCallback],
                         options: Dict[str, Any]) -> List[BatchItem]:
        """Every input through one ``medlsdm synthesize`` job: label map files as they are, segmentation nodes
        exported into a private folder with their segments' classes. Each input's outcome: its pairs in the
        job's manifest, or its line of the job's summary."""
        folder = Path(self._makeTemporaryFolder())
        results: List[BatchItem] = []
        rows: Dict[int, Dict[str, Any]] = {}
        try:
            for index, item in enumerate(inputs):
                name = str(item)
                try:
                    name = str(item) if isinstance(item, (str, os.PathLike)) else item.GetName()
                    row = self._batchRow(item, index, folder, mapping, mapFile, options["model"])
                except GenerationError as exc:
                    logging.error(f"MedLSDM: {name}: {exc}")
                    results.append(BatchItem(name, False, [], str(exc)))
                    continue
                except Exception as exc:  # a broken input (not a node, a deleted node, ...) must not end the batch
                    logging.exception(f"MedLSDM: {name}")
                    results.append(BatchItem(name, False, [], f"unexpected error: {exc}"))
                    continue
                taken = {r["name"] for r in rows.values()}
                row["name"] = next(n for n in [row["name"]] + [f"{row['name']}_{k}" for k in range(2, len(inputs) + 2)]
                                   if n not in taken)
                rows[index] = row
                results.append(BatchItem(name, False, []))
            if rows:
                self._readOutcomes(results, rows, outputFolder, options["samples"],
                                   self._runSynthesis(list(rows.values()), folder, outputFolder, mapFile, logCallback,
                                                      options))
        finally:
            if not self.debug:
                shutil.rmtree(folder, ignore_errors=True)
        return results

    def _batchRow(self, item: Any, index: int, folder: Path, mapping: Optional[Mapping[str, str]],
                  mapFile: Optional[PathLike], model: Optional[str]) -> Dict[str, Any]:
        """The synthesize list row of one batch input: a file as it is (``mapping`` by value), or a segmentation
        node exported with its segments' classes (and its background as the model's value 0)."""
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise GenerationError(f"{path} does not exist or is not a file")
            return {"label": str(path.resolve()), "name": outputName(path.name), "map": dict(mapping or {})}
        ids = self._segmentIds(item)
        values, mapArgs = self.labelValues(item, ids, model, mapping, mapFile)
        labels = folder / f"input{index}.nrrd"
        self.exportLabelmap(item, None, ids, values, labels)
        classes = dict(pair.split("=", 1) for pair in mapArgs)
        return {"label": str(labels), "name": outputName(item.GetName()), "map": {"0": "0", **classes}}

    def _runSynthesis(self, rows: List[Dict[str, Any]], folder: Path, outputFolder: Path,
                      mapFile: Optional[PathLike], logCallback: Optional[LogCallback],
                      options: Dict[str, Any]) -> Tuple[Dict[str, str], str]:
        """Run the job to its end: the failure message of each map that failed, and the job's own error."""
        listing = folder / "batch.json"
        listing.write_text(json.dumps(rows), encoding="utf-8")
        failures: Dict[str, str] = {}

        def log(message: str) -> None:
            failed = FAILED_LINE.match(message)
            if failed:
                failures[failed.group(1)] = failed.group(2)
            if logCallback is not None:
                logCallback(message)

        job = _Job(GenerationTask("batch"), "batch", None, load=False, logCallback=log)
        try:
            self._runToEnd(job, lambda: self.workerCommand(
                listing, outputFolder, command="synthesize", mapFile=mapFile, **options))
        except GenerationError as exc:
            return failures, str(exc)
        return failures, ""

    @staticmethod
    def _readOutcomes(results: List[BatchItem], rows: Dict[int, Dict[str, Any]], outputFolder: Path, samples: int,
                      ended: Tuple[Dict[str, str], str]) -> None:
        """Each listed input's outcome: ok with its images when all its pairs are in the folder's manifest,
        else its map's failure line (or the job's error)."""
        failures, message = ended
        made = FolderBatches._madePairs(outputFolder)
        width = max(2, len(str(samples)))
        for index, row in rows.items():
            names = [f"{row['name']}_s{k:0{width}d}" for k in range(1, samples + 1)]
            outputs = [made[n] for n in names if n in made]
            item = results[index]
            if len(outputs) == len(names):
                item.ok, item.output = True, outputs
            else:
                item.message = failures.get(row["name"], message or "not made: see the log")
                logging.error(f"MedLSDM: {item.input}: {item.message}")

    @staticmethod
    def _madePairs(outputFolder: Path) -> Dict[str, str]:
        """Pair name -> image path of every pair in the folder's manifest whose image is there."""
        manifest = outputFolder / "manifest.csv"
        if not manifest.is_file():
            return {}
        with open(manifest, newline="", encoding="utf-8") as stream:
            rows = [r for r in csv.DictReader(stream) if r.get("name") and r.get("image")]
        return {r["name"]: str(outputFolder / r["image"]) for r in rows if (outputFolder / r["image"]).is_file()}
