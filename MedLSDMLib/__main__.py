"""``python -m MedLSDMLib`` is the ``medlsdm`` command."""
import sys

from .cli import main

sys.exit(main())
