"""The execution layer: where long work runs (warm Ray workers, fan-out, the run model)."""
