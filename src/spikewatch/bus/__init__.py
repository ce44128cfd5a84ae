"""The message bus of the distributed mode (NATS JetStream): trades from ``spikewatch
ingest`` to the ``spikewatch detect`` workers by partition, leases and kernel snapshots
in key-value buckets. See docs/DISTRIBUTED.md.

Needs the ``nats-py`` client (``pip install 'spikewatch[distributed]'``);
:mod:`spikewatch.bus.subjects` and :mod:`spikewatch.bus.codec` are pure and need nothing.
"""
