"""``python app.py``: start spikewatch with the defaults (the same as ``spikewatch run``)."""

import sys
from pathlib import Path

# Run from a checkout without installing: make the package under src/ importable.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from spikewatch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
