"""Save the engine test suite's tiny random-weight bundle into a folder.

Run with the Python that runs the worker (it needs torch): python tiny_bundle.py FOLDER TIMESTEPS
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/: the engine suite's model helpers

from conftest import make_bundle, tiny_card  # noqa: E402

if __name__ == "__main__":
    make_bundle(tiny_card(timesteps=int(sys.argv[2]))).save(Path(sys.argv[1]))
