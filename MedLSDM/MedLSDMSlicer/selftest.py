"""Slicer's self-test of the module (Reload and Test): generation and editing on an oblique, anisotropic
volume with the first registered model, and a bad input reported."""
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .engine import GenerationError
from .export import Geometry
from .models import knownModels, modelClasses


class SelfTest(ScriptedLoadableModuleTest):
    """Slicer's self-test: generate with the first model of Models.json on an oblique, anisotropic
    volume and check the result's geometry; a bad input must end in a message. ``newLogic`` makes the
    module's logic (MedLSDM.py sets it)."""

    def newLogic(self):
        raise NotImplementedError

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_empty_segmentation_is_reported()
        logic = self.newLogic()
        if not logic.pythonExecutable and (logic._installedVersion("torch") is None or logic._missingRequirements()):
            # A self-test must not download gigabytes: generation is tested where the packages are installed.
            self.delayDisplay("Generation test skipped: PyTorch or MedLSDM's packages are not installed (click "
                              "Generate once to install them)")
            return
        self.setUp()
        self.test_generate_keeps_the_reference_geometry()
        self.setUp()
        self.test_edit_keeps_the_real_scan_outside_the_region()

    def _referenceVolume(self):
        import numpy as np

        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Reference")
        voxels = np.random.default_rng(0).normal(100, 20, (30, 52, 44)).astype(np.int16)  # k, j, i
        slicer.util.updateVolumeFromArray(volume, voxels)
        volume.SetSpacing(1.1, 0.9, 1.6)
        volume.SetOrigin(-22.5, 17.0, -20.25)
        angle = np.deg2rad(20.0)
        c, s = np.cos(angle), np.sin(angle)
        volume.SetIJKToRASDirections(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
        return volume

    def _tissues(self, reference, model: str):
        """A segmentation on ``reference``: nested spheres of the model's first three classes."""
        import numpy as np

        classes = modelClasses(model)
        self.assertIsNotNone(classes, f"model {model} is not installed")
        foreground = [name for value, name in classes if value != 0][:3]
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Tissues")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in (30, 52, 44)], indexing="ij")
        radius = np.sqrt(sum(g ** 2 for g in grids))
        for name, limit in zip(foreground, (0.9, 0.65, 0.4)):
            segmentId = segmentation.GetSegmentation().AddEmptySegment("", name)
            slicer.util.updateSegmentBinaryLabelmapFromArray((radius < limit).astype(np.uint8), segmentation,
                                                              segmentId, reference)
        return segmentation, radius

    def test_generate_keeps_the_reference_geometry(self) -> None:
        import numpy as np

        self.delayDisplay("Generating with the first model of Models.json")
        model = knownModels()[0].name
        reference = self._referenceVolume()
        segmentation, _ = self._tissues(reference, model)

        logic = self.newLogic()
        result = logic.generate(segmentation, reference, model=model, seed=1)
        self.assertEqual(result.GetName(), "Tissues synthetic seed 1")
        self.assertEqual(result.GetImageData().GetDimensions(), reference.GetImageData().GetDimensions())
        self.assertEqual(Geometry.of(result).differences(Geometry.of(reference)), [])
        voxels = slicer.util.arrayFromVolume(result)
        self.assertTrue(np.isfinite(voxels).all() and voxels.std() > 0)
        self.delayDisplay("Generated volume has the reference geometry")

    def test_edit_keeps_the_real_scan_outside_the_region(self) -> None:
        import numpy as np

        self.delayDisplay("Editing a region of a scan with the first model of Models.json")
        model = knownModels()[0].name
        reference = self._referenceVolume()
        real = slicer.util.arrayFromVolume(reference).copy()
        segmentation, radius = self._tissues(reference, model)
        logic = self.newLogic()
        logic.startEditing(segmentation)
        inner = segmentation.GetSegmentation().GetNthSegmentID(2)
        grown = (radius < 0.55).astype(np.uint8)  # the innermost sphere grows: the edit
        slicer.util.updateSegmentBinaryLabelmapFromArray(grown, segmentation, inner, reference)
        changed = logic.changedRegion(reference, segmentation)
        self.assertEqual(int(changed.sum()), int(((radius < 0.55) & (radius >= 0.4)).sum()))

        result = logic.edit(reference, segmentation, model=model, seed=1, margin=2.0)
        self.assertEqual(result.GetName(), "Reference edited seed 1")
        self.assertEqual(Geometry.of(result).differences(Geometry.of(reference)), [])
        voxels = slicer.util.arrayFromVolume(result)
        far = radius > 0.9  # well beyond the edited shell and its margin
        self.assertTrue(np.array_equal(voxels[far], real[far]), "voxels far from the edit changed")
        self.assertFalse(np.allclose(voxels[changed], real[changed]), "the edited region was not regenerated")
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(reference), real), "the real scan changed")
        self.delayDisplay("Edited only the changed region")

    def test_empty_segmentation_is_reported(self) -> None:
        reference = self._referenceVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")
        with self.assertRaises(GenerationError) as raised:
            self.newLogic().generate(segmentation, reference, model=knownModels()[0].name)
        self.assertIn("Nothing has no segments", str(raised.exception))
        self.delayDisplay("Empty segmentation reported")
