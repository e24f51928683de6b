"""Entry points for ``ray job submit`` (large builds and sweeps on a cluster)."""
