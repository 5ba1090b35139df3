"""The lineage client (client/) is a package of its own, installed into a company's training
environment; these tests use it from its source folder."""

import sys
from pathlib import Path

CLIENT_SOURCE = Path(__file__).resolve().parents[2] / "client" / "src"
if str(CLIENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLIENT_SOURCE))
