"""Locating and loading libpat.so with ctypes; the C structs and prototypes of runtime/pat.h.

Nothing here runs at import time: the library is opened on first use, so ``import pat``
works on machines without the library, a GPU or a CUDA driver.
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from .errors import PatLibraryNotFound

LIBRARY_ENV = "PAT_LIBRARY"
LIBRARY_NAME = "libpat.so"

_lock = threading.Lock()
_lib = None
_lib_path = None


class ContextDesc(ctypes.Structure):
    """struct pat_context_desc."""

    _fields_ = [
        ("spec_path", ctypes.c_char_p),
        ("device", ctypes.c_int),
        ("cache_dir", ctypes.c_char_p),
        ("lazy", ctypes.c_int),
        ("progress", ctypes.c_int),
        ("num_streams", ctypes.c_int),
    ]


class SpecInfo(ctypes.Structure):
    """struct pat_spec_info."""

    _fields_ = [
        ("name", ctypes.c_char * 64),
        ("dtype", ctypes.c_int),
        ("head_dim", ctypes.c_int),
        ("page_size", ctypes.c_int),
        ("num_gqa", ctypes.c_int),
        ("gqa", ctypes.c_int * 16),
        ("num_tiles", ctypes.c_int),
    ]


class BatchDesc(ctypes.Structure):
    """struct pat_batch_desc (pat_mode is a C enum: an int)."""

    _fields_ = [
        ("num_queries", ctypes.c_int32),
        ("seq_lens", ctypes.c_void_p),
        ("block_table", ctypes.c_void_p),
        ("block_table_stride", ctypes.c_int32),
        ("num_pages", ctypes.c_int32),
        ("q_heads", ctypes.c_int32),
        ("kv_heads", ctypes.c_int32),
        ("mode", ctypes.c_int),
    ]


class PlanInfo(ctypes.Structure):
    """struct pat_plan_info."""

    _fields_ = [
        ("num_packs", ctypes.c_int),
        ("num_ctas", ctypes.c_int),
        ("num_launches", ctypes.c_int),
        ("num_merges", ctypes.c_int),
        ("num_slots", ctypes.c_int),
        ("kv_tokens_read", ctypes.c_longlong),
        ("kv_tokens_unique", ctypes.c_longlong),
        ("build_us", ctypes.c_double),
        ("num_masked_packs", ctypes.c_int),
    ]


class Tensors(ctypes.Structure):
    """struct pat_tensors (pat_devptr is unsigned long long)."""

    _fields_ = [
        ("q", ctypes.c_ulonglong),
        ("k_cache", ctypes.c_ulonglong),
        ("v_cache", ctypes.c_ulonglong),
        ("out", ctypes.c_ulonglong),
        ("q_stride", ctypes.c_longlong),
        ("o_stride", ctypes.c_longlong),
        ("scale", ctypes.c_float),
    ]


def candidate_paths() -> list[Path]:
    """The places searched for libpat.so, in order.

    1. ``$PAT_LIBRARY`` (a file, or a folder holding libpat.so); when set, it is the only
       candidate, so a wrong setting is reported rather than silently bypassed;
    2. next to this package (``pat/libpat.so``, for wheels that bundle it);
    3. the repository's ``build/libpat.so`` when the package runs from a checkout
       (``python/pat`` inside the repository).
    """
    out: list[Path] = []
    env = os.environ.get(LIBRARY_ENV)
    if env:
        p = Path(env).expanduser()
        return [p / LIBRARY_NAME if p.is_dir() else p]
    here = Path(__file__).resolve().parent
    out.append(here / LIBRARY_NAME)
    out.append(here.parent.parent / "build" / LIBRARY_NAME)
    return out


def library_path() -> Path | None:
    """The libpat.so that :func:`load` would open, or None when none is found."""
    for p in candidate_paths():
        if p.is_file():
            return p
    return None


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_size_t, c_char_p, c_void_p = ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
    lib.pat_context_create.argtypes = [ctypes.POINTER(ContextDesc), ctypes.POINTER(c_void_p), c_char_p, c_size_t]
    lib.pat_context_create.restype = c_int
    lib.pat_context_destroy.argtypes = [c_void_p]
    lib.pat_context_destroy.restype = None
    lib.pat_status_string.argtypes = [c_int]
    lib.pat_status_string.restype = c_char_p
    lib.pat_last_error.argtypes = [c_void_p]
    lib.pat_last_error.restype = c_char_p
    lib.pat_context_device.argtypes = [c_void_p, ctypes.POINTER(c_int), ctypes.POINTER(c_int), c_char_p, c_size_t]
    lib.pat_context_device.restype = c_int
    lib.pat_context_spec_info.argtypes = [c_void_p, ctypes.POINTER(SpecInfo)]
    lib.pat_context_spec_info.restype = c_int
    lib.pat_context_tuning.argtypes = [c_void_p]
    lib.pat_context_tuning.restype = c_char_p
    lib.pat_plan_create.argtypes = [c_void_p, ctypes.POINTER(BatchDesc), c_void_p, ctypes.POINTER(c_void_p)]
    lib.pat_plan_create.restype = c_int
    lib.pat_plan_destroy.argtypes = [c_void_p]
    lib.pat_plan_destroy.restype = None
    lib.pat_plan_get_info.argtypes = [c_void_p, ctypes.POINTER(PlanInfo)]
    lib.pat_plan_get_info.restype = c_int
    lib.pat_plan_workspace_size.argtypes = [c_void_p]
    lib.pat_plan_workspace_size.restype = c_size_t
    lib.pat_forward.argtypes = [c_void_p, c_void_p, ctypes.POINTER(Tensors), ctypes.c_ulonglong, c_size_t, c_void_p]
    lib.pat_forward.restype = c_int


def load() -> ctypes.CDLL:
    """Opens libpat.so once (thread-safe) and returns it.

    Raises:
        PatLibraryNotFound: no candidate exists, or the dynamic loader refused it (a
            missing dependency such as liblua5.4.so.0 or libnvrtc.so is named in the
            message).
    """
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            return _lib
        path = library_path()
        if path is None:
            tried = ", ".join(str(p) for p in candidate_paths())
            raise PatLibraryNotFound(
                f"{LIBRARY_NAME} not found (tried: {tried}); build it with `make all` in the "
                f"repository or point ${LIBRARY_ENV} at it")
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise PatLibraryNotFound(f"cannot load {path}: {e}") from e
        _declare(lib)
        _lib, _lib_path = lib, path
        return lib


def loaded_path() -> Path | None:
    """The path of the loaded library, or None before the first :func:`load`."""
    return _lib_path


def status_string(status: int) -> str:
    """``pat_status_string`` of a status code (loads the library)."""
    return load().pat_status_string(int(status)).decode()
