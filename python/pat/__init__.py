"""pat: prefix-aware decode attention for paged KV caches (Python binding over libpat.so).

Importing this package needs neither a GPU, nor a CUDA driver, nor libpat.so, nor PyTorch:
the library is opened on the first call that needs it, and errors name what is missing.

Typical use, once per model::

    ctx = pat.Context("specs/llama3_8b.yaml", device=0)

per decode step::

    plan = ctx.plan(block_table, seq_lens, q_heads=32, kv_heads=8, num_pages=k_cache.shape[0])

per layer::

    plan.forward(q, k_cache, v_cache, out)   # on torch.cuda.current_stream()
"""
from ._lib import candidate_paths, library_path, loaded_path
from .core import MODE_DIRECT, MODE_PREFIX, Context, DeviceInfo, Plan, PlanInfo, current_stream
from .errors import (PatArgumentError, PatCompileError, PatCudaError, PatError, PatLibraryNotFound,
                     PatNoDriverError, PatSpecError)
from .spec import SpecSummary, read_spec

__version__ = "0.1.0"

__all__ = [
    "Context", "Plan", "PlanInfo", "DeviceInfo", "MODE_PREFIX", "MODE_DIRECT", "current_stream",
    "PatError", "PatArgumentError", "PatLibraryNotFound", "PatNoDriverError", "PatSpecError",
    "PatCompileError", "PatCudaError", "SpecSummary", "read_spec", "library_path", "candidate_paths",
    "loaded_path", "__version__",
]
