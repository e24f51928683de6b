"""Bottom of compute: input checks, batching and fused recursions, rolling windows, errors, JAX
configuration, fast math, label codes."""
