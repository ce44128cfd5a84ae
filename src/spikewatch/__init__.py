"""spikewatch: real-time crypto volume-spike detection."""

__version__ = "0.1.0"
