"""Slicer-side code of the MedLSDM module that does not need the GUI: the worker process and the
generation logic. Slicer's process imports only the engine's torch-free modules (see engine.py): the
engine's torch parts run in the worker process."""
