"""The roles of the distributed mode (docs/DISTRIBUTED.md): ``ingest`` (exchange ->
trade stream) and ``detect`` (trade stream -> kernel -> PostgreSQL and the signal
stream). Both need ``nats-py`` (``pip install 'spikewatch[distributed]'``)."""
