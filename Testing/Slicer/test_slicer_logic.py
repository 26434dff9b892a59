"""The module's logic on real MRML (slicer-core) with the real worker process on a tiny model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import slicer
import slicer.util

from MedLSDMSlicer import serving
from MedLSDMSlicer.logic import GenerationError, GenerationLogic, Geometry

from conftest import (SPACING, addReferenceVolume, addSegmentation, ijkToRas, nodesOfClass,
                      rotation, runEventLoop, shells)


def temporaryEntries() -> List[str]:
    return sorted(os.listdir(slicer.app.temporaryPath))


def test_names_map_to_classes_and_unmatched_segments_are_all_named(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    logic = GenerationLogic()
    segmentation = addSegmentation(scene, reference, ("csf", "Grey Matter", "white_matter"))
    ids = logic._segmentIds(segmentation)
    values, mapArgs = logic.labelValues(segmentation, ids, str(bundle))
    assert values == {"csf": 1, "Grey Matter": 2, "white_matter": 3}
    assert mapArgs == ["1=1", "2=2", "3=3"]  # segment label value = the model's class value

    renamed = addSegmentation(scene, reference, ("Tumor", "grey matter", "Edema"), name="lesions")
    with pytest.raises(GenerationError) as raised:
        logic.labelValues(renamed, logic._segmentIds(renamed), str(bundle))
    message = str(raised.value)
    assert "'Tumor'" in message and "'Edema'" in message and "grey matter" not in message.split("match")[0]
    assert "0=background, 1=csf, 2=grey matter, 3=white matter" in message

    values, mapArgs = logic.labelValues(renamed, logic._segmentIds(renamed), str(bundle),
                                        {"tumor": "white matter", "Edema": "1"})
    assert mapArgs == ["1=3", "2=2", "3=1"]
    with pytest.raises(GenerationError, match="'Necrosis'"):
        logic.labelValues(renamed, logic._segmentIds(renamed), str(bundle), {"Necrosis": "csf"})


def test_export_puts_each_segment_on_the_reference_grid(scene, tmp_path: Path) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    logic = GenerationLogic()
    nodesBefore = scene.GetNumberOfNodes()
    path = tmp_path / "labels.nrrd"
    geometry = logic.exportLabelmap(segmentation, reference, logic._segmentIds(segmentation),
                                    {"csf": 1, "Grey Matter": 2, "white_matter": 3}, path)
    assert scene.GetNumberOfNodes() == nodesBefore  # the export's own nodes are gone again
    assert geometry.differences(Geometry.of(reference)) == []
    labels = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(labels)
    outer, middle, inner = shells()
    expected = np.where(inner > 0, 3, np.where(middle > 0, 2, np.where(outer > 0, 1, 0)))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(labels), expected)
    np.testing.assert_allclose(ijkToRas(labels), ijkToRas(reference), rtol=0, atol=1e-9)


def test_generate_loads_a_volume_with_the_exact_geometry_of_the_oblique_reference(scene, bundle: Path) -> None:
    """The segmentation is painted on one oblique grid and generated on the reference volume's,
    which differs in size, spacing, origin and directions."""
    painted = addReferenceVolume(scene, "painted on")
    segmentation = addSegmentation(scene, painted)
    reference = addReferenceVolume(scene, "T1", size=(19, 23, 15), spacing=(1.1, 1.4, 2.0), origin=(8.0, -3.0, 5.0),
                                   directions=rotation((3.0, -1.0, 2.0), 17.0))
    events: List[Tuple[str, int, int]] = []
    node = GenerationLogic().generate(segmentation, reference, model=str(bundle), steps=2, seed=3, device="CPU",
                                      progressCallback=lambda *event: events.append(event))
    assert node.GetName() == "brain synthetic seed 3"
    assert node.GetScene() is scene and node.GetDisplayNode() is not None
    assert node.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions()
    np.testing.assert_allclose(ijkToRas(node), ijkToRas(reference), rtol=0, atol=1e-6)
    voxels = slicer.util.arrayFromVolume(node)
    assert np.isfinite(voxels).all() and voxels.std() > 0
    assert voxels.min() >= -100 - 1e-3 and voxels.max() <= 300 + 1e-3  # the tiny model's intensity window
    assert ("sample", 2, 2) in events and all(0 < step <= total for _, step, total in events)
    assert temporaryEntries() == []
    assert nodesOfClass(scene, "vtkMRMLLabelMapVolumeNode") == []


def test_cancel_ends_the_request_and_leaves_nothing(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    finished = []
    sampling = []
    task = GenerationLogic().generate(segmentation, reference, model=str(bundle), steps=1000, seed=1, device="cpu",
                                      waitForCompletion=False, finishedCallback=finished.append,
                                      progressCallback=lambda stage, step, total: sampling.append(step))
    assert task.state == "running" and task.process is not None
    runEventLoop(lambda: len(sampling) > 0)
    task.cancel()
    runEventLoop(lambda: task.state != "running", timeout=30)
    assert task.state == "cancelled" and finished == [task]
    assert sampling[-1] < 1000
    assert task.process.returncode is not None and serving.sharedWorker().alive()  # the worker stays
    assert task.outputNodes == [] and nodesOfClass(scene, "vtkMRMLScalarVolumeNode") == [reference]
    assert temporaryEntries() == []


def test_an_empty_segmentation_ends_in_the_error_state(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    noSegments = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    finished = []
    task = GenerationLogic().generate(noSegments, reference, model=str(bundle), waitForCompletion=False,
                                      finishedCallback=finished.append)
    assert task.state == "error" and finished == [task]
    assert "nothing has no segments" in task.message

    unpainted = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "unpainted")
    unpainted.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    unpainted.GetSegmentation().AddEmptySegment("", "csf")
    with pytest.raises(GenerationError, match="unpainted is empty on the grid of T1"):
        GenerationLogic().generate(unpainted, reference, model=str(bundle))
    assert temporaryEntries() == []
    assert nodesOfClass(scene, "vtkMRMLScalarVolumeNode") == [reference]


def test_an_unmapped_segment_ends_in_the_error_state(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference, ("csf", "Tumor"))
    task = GenerationLogic().generate(segmentation, reference, model=str(bundle), waitForCompletion=False)
    assert task.state == "error" and task.process is None
    assert "'Tumor'" in task.message and "rename them, or map them" in task.message
    assert temporaryEntries() == []


def readVolume(path: Path, className: str = "vtkMRMLScalarVolumeNode"):
    node = getattr(slicer, className)()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    return node


def test_a_batch_into_a_folder_is_one_synthesize_job_that_goes_on_past_a_failing_input(scene, bundle: Path,
                                                                                       tmp_path: Path) -> None:
    """Nodes and files go through one worker (one model load); each input's outcome is its own summary line;
    a rerun makes nothing again."""
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference, name="case 1")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    outer, middle, inner = shells()
    files = {}
    for name, voxels in (("good", outer + middle), ("bad", outer * 7)):  # 7 is no class of the model
        slicer.util.updateVolumeFromArray(labelmap, voxels.astype(np.int16))
        labelmap.SetSpacing(*reference.GetSpacing())
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        files[name] = tmp_path / f"{name}.nrrd"
        storage.SetFileName(str(files[name]))
        assert storage.WriteData(labelmap)
    out = tmp_path / "out"
    out.mkdir()
    logic = GenerationLogic()
    workers: List[List[str]] = []
    start = logic._start

    def counted(job, args: List[str], waitForCompletion: bool) -> None:
        workers.append(args)
        start(job, args, waitForCompletion)

    logic._start = counted  # type: ignore[method-assign]

    inputs = [segmentation, str(files["bad"]), files["good"], tmp_path / "missing.nrrd"]
    summary = logic.generateBatch(inputs, out, model=str(bundle), steps=2, seed=5, samples=2, device="cpu")
    assert len(workers) == 1 and "synthesize" in workers[0]
    assert [item.ok for item in summary] == [True, False, True, False], [str(item) for item in summary]
    assert summary[0].output == [str(out / "case_1_s01_image.nii.gz"), str(out / "case_1_s02_image.nii.gz")]
    assert summary[2].output == [str(out / "good_s01_image.nii.gz"), str(out / "good_s02_image.nii.gz")]
    assert "value(s) 7" in summary[1].message and summary[1].output == []
    assert "does not exist" in summary[3].message
    assert str(summary[1]).startswith("FAILED") and str(summary[2]).startswith("ok")
    pairs = [f"{name}_s0{k}_{kind}.nii.gz" for name in ("case_1", "good") for k in (1, 2) for kind in ("image", "label")]
    assert sorted(os.listdir(out)) == sorted(pairs + ["manifest.csv"])
    image = readVolume(out / "case_1_s01_image.nii.gz")
    assert Geometry.of(image).differences(Geometry.of(reference)) == []
    label = readVolume(out / "case_1_s01_label.nii.gz", "vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(label), outer + middle + inner)  # the segments' classes
    assert temporaryEntries() == []  # the node's export and the job's list are removed

    again = logic.generateBatch(inputs, out, model=str(bundle), steps=2, seed=5, samples=2, device="cpu")
    assert [str(item) for item in again] == [str(item) for item in summary]
    assert len(workers) == 2 and sorted(os.listdir(out)) == sorted(pairs + ["manifest.csv"])


def test_batch_loads_every_sample_of_a_label_map_file_into_the_scene(scene, bundle: Path, tmp_path: Path) -> None:
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    outer, middle, inner = shells()
    slicer.util.updateVolumeFromArray(labelmap, (outer + middle + inner).astype(np.uint8))
    labelmap.SetSpacing(*reversed(SPACING))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "case 2.nii.gz"))
    assert storage.WriteData(labelmap)

    summary = GenerationLogic().generateBatch([tmp_path / "case 2.nii.gz"], scene=scene, model=str(bundle), steps=2,
                                              seed=5, samples=2, device="cpu")
    assert [item.ok for item in summary] == [True], summary[0].message
    first, second = summary[0].output
    assert [first.GetName(), second.GetName()] == ["case_2 synthetic seed 5", "case_2 synthetic seed 6"]
    assert first.GetScene() is scene and second.GetScene() is scene
    assert first.GetImageData().GetDimensions() == labelmap.GetImageData().GetDimensions()
    np.testing.assert_allclose(first.GetSpacing(), tuple(reversed(SPACING)), rtol=0, atol=1e-6)
    assert not np.array_equal(slicer.util.arrayFromVolume(first), slicer.util.arrayFromVolume(second))
    assert temporaryEntries() == []


def test_the_chosen_output_volume_receives_the_result_on_the_reference_grid(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    output = addReferenceVolume(scene, "previous result", size=(5, 6, 7), spacing=(3.0, 3.0, 3.0))
    node = GenerationLogic().generate(segmentation, reference, model=str(bundle), steps=2, seed=1, device="cpu",
                                      outputVolumeNode=output)
    assert node is output
    assert Geometry.of(output).differences(Geometry.of(reference)) == []
    assert sorted(n.GetName() for n in nodesOfClass(scene, "vtkMRMLScalarVolumeNode")) == ["T1", "previous result"]


def test_the_reference_volume_is_never_the_output(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    before = slicer.util.arrayFromVolume(reference).copy()
    segmentation = addSegmentation(scene, reference)
    with pytest.raises(GenerationError, match="the output volume is the reference volume T1"):
        GenerationLogic().generate(segmentation, reference, model=str(bundle), outputVolumeNode=reference)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(reference), before)
    assert temporaryEntries() == []


def test_a_failure_while_handling_the_output_ends_the_task_and_its_request(scene, bundle: Path) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)

    def broken(stage: str, step: int, total: int) -> None:
        raise RuntimeError("the panel is gone")

    task = GenerationLogic().generate(segmentation, reference, model=str(bundle), steps=1000, seed=1, device="cpu",
                                      waitForCompletion=False, progressCallback=broken)
    runEventLoop(lambda: task.state != "running", timeout=60)
    assert task.state == "error" and "the panel is gone" in task.message
    assert task.process.returncode is not None and serving.sharedWorker().alive()  # the worker stays


def test_a_batch_input_that_is_neither_a_node_nor_a_file_is_reported(scene, bundle: Path, tmp_path: Path) -> None:
    summary = GenerationLogic().generateBatch([None], tmp_path, model=str(bundle), steps=2)
    assert [item.ok for item in summary] == [False] and "unexpected error" in summary[0].message


def test_a_mapping_file_maps_freesurfer_segment_names(scene, bundle: Path) -> None:
    """Segments named as FreeSurfer names its structures map through the shipped table, by the
    engine's own parser; ``mapping`` still wins; a missing file is one GenerationError."""
    reference = addReferenceVolume(scene)
    logic = GenerationLogic()
    segmentation = addSegmentation(scene, reference, ("Left-Lateral-Ventricle", "Left-Cerebral-Cortex",
                                                      "Left-Cerebral-White-Matter"), name="aseg")
    ids = logic._segmentIds(segmentation)
    values, mapArgs = logic.labelValues(segmentation, ids, str(bundle), mapFile="freesurfer_tissue")
    assert mapArgs == ["1=1", "2=2", "3=3"]  # CSF, grey matter, white matter
    values, mapArgs = logic.labelValues(segmentation, ids, str(bundle), {"Left-Cerebral-Cortex": "csf"},
                                        mapFile="freesurfer_tissue")
    assert mapArgs == ["1=1", "2=1", "3=3"]
    with pytest.raises(GenerationError, match="does not exist"):
        logic.labelValues(segmentation, ids, str(bundle), mapFile="no_such_table")
    command = logic.workerCommand("labels.nrrd", "out.nrrd", mapFile="freesurfer_tissue")
    assert command[command.index("--map-file") + 1] == "freesurfer_tissue"
