"""``python -m spikewatch``: the same as the ``spikewatch`` command."""

from spikewatch.cli import main

raise SystemExit(main())
