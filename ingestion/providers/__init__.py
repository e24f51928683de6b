"""Market-data providers behind one interface: synthetic (default, offline), binance, file."""
