"""The backtest engine, strategies, performance metrics, the parameter-grid sweep kernel and
walk-forward splits."""
