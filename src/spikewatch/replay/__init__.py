"""Recorded and historical data: readers, the tape, and the exchange simulator."""
