"""Loaded by every Python subprocess the tests start (PYTHONPATH): the same network guard."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from emulators import netguard

netguard.install()
