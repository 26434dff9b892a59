"""Slicer-side code of the MedLSDM module that does not need the GUI: the worker process and the
generation logic. It imports neither torch nor MedLSDMLib: the engine runs in the worker process."""
