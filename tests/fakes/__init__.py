"""Fakes for tests: a real-HTTP fake Binance exchange (``tests.fakes.exchange``)."""
