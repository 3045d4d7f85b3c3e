"""EMO training: dataset over manifests, the three stages, the accelerate loop (`train.main`)."""
import os

# Bit-exact resume on CPU: without Conditional Numerical Reproducibility, MKL's GEMM picks code
# paths by memory alignment, so a model reloaded into new memory drifts by ~1e-7 per step from the
# uninterrupted run. AUTO keeps the fastest path for this CPU. (An explicit MKL_CBWR in the
# environment is respected.)
os.environ.setdefault("MKL_CBWR", "AUTO")
