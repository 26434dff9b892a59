"""``python -m MedLSDMLib`` is the ``medlsdm`` command."""

import sys

from MedLSDMLib.cli.main import main

sys.exit(main())
