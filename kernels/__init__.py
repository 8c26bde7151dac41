"""Per-era kernels."""
