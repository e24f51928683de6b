"""Risk measures: VaR/ES (historical, normal, Cornish-Fisher), drawdown, vol targeting, correlation
and portfolio VaR."""
