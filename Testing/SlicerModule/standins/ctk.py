"""Stand-in for CTK's Python module: the CTK widgets MedLSDM.ui uses (see widgets.py)."""
from widgets import ctkCollapsibleButton  # noqa: F401
