"""Pure JAX/NumPy kernels: no I/O, no Ray, no database, no clock; imports nothing of ours."""
