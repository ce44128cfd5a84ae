"""Data shipped with spikewatch: the demo recording (see SOURCE.md)."""
