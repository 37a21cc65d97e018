"""Contexts, plans and forward: the binding over runtime/pat.h.

A :class:`Context` is one spec on one CUDA device (kernels compiled at creation or loaded
from the disk cache). Per decode step, :meth:`Context.plan` schedules the batch from its
block table and sequence lengths (host work, one upload); :meth:`Plan.forward` then runs
attention for one layer with that plan on PyTorch's current CUDA stream.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from . import _lib
from ._tensors import ITEM_SIZES, check_tensor, data_ptr, dense_strides, dtype_name, host_int32, strides_of
from .errors import PatArgumentError, PatError, error_for_status
from .spec import SpecSummary

MODE_PREFIX = 0  # PAT_MODE_PREFIX: queries sharing pages share CTAs
MODE_DIRECT = 1  # PAT_MODE_DIRECT: one query per CTA (flash-decoding)
_MODES = {"prefix": MODE_PREFIX, "direct": MODE_DIRECT, MODE_PREFIX: MODE_PREFIX, MODE_DIRECT: MODE_DIRECT}


def _mode_value(mode: Any) -> int:
    if isinstance(mode, str):
        mode = mode.lower()
    if mode not in _MODES:
        raise PatArgumentError("mode", f"expected 'prefix' or 'direct' (or pat.MODE_PREFIX / MODE_DIRECT), got {mode!r}")
    return _MODES[mode]


def current_stream(device: int) -> int:
    """The handle (cudaStream_t as an int) of PyTorch's current stream on a device."""
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def _stream_handle(stream: Any, device: int) -> int:
    if stream is None:
        try:
            return current_stream(device)
        except ImportError:
            return 0  # no PyTorch: the legacy default stream
    if isinstance(stream, int):
        return stream
    handle = getattr(stream, "cuda_stream", None)
    if handle is None:
        raise PatArgumentError("stream", f"expected a torch.cuda.Stream or an int handle, got {type(stream).__name__}")
    return int(handle)


@dataclass(frozen=True)
class DeviceInfo:
    """The device a context runs on."""

    name: str
    num_sms: int
    arch: int  # compute capability x 10 (90 for sm_90)


@dataclass(frozen=True)
class PlanInfo:
    """Facts of a plan (``pat_plan_info``)."""

    num_packs: int
    num_ctas: int
    num_launches: int
    num_merges: int
    num_slots: int
    kv_tokens_read: int
    kv_tokens_unique: int
    build_us: float
    num_masked_packs: int


class _Closing:
    """``with`` support and close-on-collection for objects that own a library handle."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Context(_Closing):
    """One spec on one CUDA device: owns the compiled kernels and the forward streams.

    Args:
        spec_path: the YAML spec (specs/README.md).
        device: CUDA device ordinal (a ``torch.device("cuda:N")`` or "cuda:N" is accepted).
        cache_dir: kernel cache folder; None: $PAT_CACHE_DIR, else $XDG_CACHE_HOME/pat,
            else ~/.cache/pat; "": no disk cache.
        lazy: compile each kernel on first use instead of all at creation.
        progress: print a progress line on stderr while compiling (on a terminal).
        num_streams: streams tile groups fork onto, before sm_90 or with
            PAT_PDL=off (0: the library's default, 4).

    Raises:
        PatLibraryNotFound: libpat.so cannot be found or loaded.
        PatSpecError: the spec is missing or invalid (the message has file:line:column).
        PatNoDriverError: no CUDA driver or no sm_80+ device.
        PatCompileError: NVRTC failed.

    Not for concurrent forward calls from several threads (one thread at a time per
    context, as the C library requires); plan creation is guarded by a lock.
    """

    def __init__(self, spec_path: str | os.PathLike, device: Any = 0, *, cache_dir: str | None = None,
                 lazy: bool = False, progress: bool = False, num_streams: int = 0):
        self._handle = None
        self._plans: "weakref.WeakSet[Plan]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self.device = _device_index(device)
        self.spec_path = str(spec_path)
        lib = _lib.load()
        desc = _lib.ContextDesc()
        desc.spec_path = os.fsencode(self.spec_path)
        desc.device = self.device
        desc.cache_dir = None if cache_dir is None else os.fsencode(cache_dir)
        desc.lazy = int(bool(lazy))
        desc.progress = int(bool(progress))
        desc.num_streams = int(num_streams)
        handle = ctypes.c_void_p()
        msg = ctypes.create_string_buffer(4096)
        st = lib.pat_context_create(ctypes.byref(desc), ctypes.byref(handle), msg, len(msg))
        if st != 0:
            raise error_for_status(st, f"creating a pat context for {self.spec_path} on device {self.device}",
                                   msg.value.decode(errors="replace"))
        self._handle = handle.value
        self._lib = lib
        info = _lib.SpecInfo()
        st = lib.pat_context_spec_info(self._handle, ctypes.byref(info))
        if st != 0:
            self.close()
            raise error_for_status(st, "pat_context_spec_info", "")
        # The library's own view of the spec, so the checks match what it was built for.
        self.spec: SpecSummary = SpecSummary(
            path=self.spec_path, name=info.name.decode(), dtype=("fp16", "bf16")[info.dtype],
            head_dim=info.head_dim, page_size=info.page_size,
            gqa=tuple(info.gqa[i] for i in range(info.num_gqa)))

    # -- facts -------------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        """The spec's element type as PyTorch names it ("float16" or "bfloat16")."""
        return self.spec.torch_dtype_name

    @property
    def head_dim(self) -> int:
        """The spec's head size."""
        return self.spec.head_dim

    @property
    def page_size(self) -> int:
        """Tokens per KV page (the spec's page_size; vLLM's block_size)."""
        return self.spec.page_size

    def device_info(self) -> DeviceInfo:
        """Name, multiprocessor count and compute capability of the context's device."""
        sms, arch = ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        self._check(self._lib.pat_context_device(self._require(), ctypes.byref(sms), ctypes.byref(arch), name,
                                                 len(name)), "reading device facts")
        return DeviceInfo(name.value.decode(errors="replace"), sms.value, arch.value)

    @property
    def tuning(self) -> str:
        """``pat_context_tuning``: which tuning table the context applied, or why none."""
        return self._lib.pat_context_tuning(self._require()).decode(errors="replace")

    def last_error(self) -> str:
        """``pat_last_error``: the detail of the last failed call on this context."""
        if not self._handle:
            return ""
        return self._lib.pat_last_error(self._handle).decode(errors="replace")

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Destroys the live plans of this context, then the context. Idempotent."""
        if not self._handle:
            return
        for plan in list(self._plans):
            plan.close()
        self._lib.pat_context_destroy(self._handle)
        self._handle = None

    def _require(self) -> int:
        if not self._handle:
            raise PatError("the pat context is closed")
        return self._handle

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise error_for_status(status, what, self.last_error())

    # -- planning ----------------------------------------------------------------------
    def plan(self, block_table: Any, seq_lens: Any, *, q_heads: int, kv_heads: int, num_pages: int,
             mode: Any = "prefix", stream: Any = None) -> "Plan":
        """Schedules one decode step (``pat_plan_create``).

        Args:
            block_table: int32 [num_queries, max_pages] page ids per query (vLLM's
                block_tables); a host tensor, a NumPy array or lists. A CUDA tensor is copied
                to the host first (this synchronises with its stream: keep a host copy).
            seq_lens: int32 [num_queries]: tokens each query attends to, its own included.
            q_heads, kv_heads: head counts; q_heads / kv_heads must be a GQA ratio the spec
                builds.
            num_pages: pages in the KV cache (page ids must be below it).
            mode: "prefix" (pat's schedule) or "direct" (one query per CTA).
            stream: the stream of the metadata upload; None: PyTorch's current stream.

        Returns:
            A :class:`Plan`, reused by every layer of the step.

        Raises:
            PatArgumentError: bad shapes/dtypes, or a batch the library refuses (page id out
                of range, seq_len beyond its row, ...: the library's detail is in the message).
            PatSpecError: the spec does not build this GQA ratio.
        """
        bt = host_int32("block_table", block_table, 2)
        sl = host_int32("seq_lens", seq_lens, 1)
        n = sl.shape[0]
        if n < 1:
            raise PatArgumentError("seq_lens", "the batch is empty (at least one query is needed)")
        if bt.shape[0] < n:
            raise PatArgumentError("block_table", f"has {bt.shape[0]} rows, seq_lens has {n} queries")
        for nm, v in (("q_heads", q_heads), ("kv_heads", kv_heads), ("num_pages", num_pages)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v >= 1 << 31:
                raise PatArgumentError(nm, f"expected a positive int, got {v!r}")
        if q_heads % kv_heads:
            raise PatArgumentError("q_heads", f"{q_heads} is not a multiple of kv_heads {kv_heads}")
        desc = _lib.BatchDesc()
        desc.num_queries = n
        desc.seq_lens = sl.ptr
        desc.block_table = bt.ptr
        desc.block_table_stride = bt.row_stride
        desc.num_pages = num_pages
        desc.q_heads = q_heads
        desc.kv_heads = kv_heads
        desc.mode = _mode_value(mode)
        handle = ctypes.c_void_p()
        with self._lock:
            st = self._lib.pat_plan_create(self._require(), ctypes.byref(desc), _stream_handle(stream, self.device),
                                           ctypes.byref(handle))
            if st != 0:
                raise error_for_status(st, "pat_plan_create", self.last_error())
        plan = Plan(self, handle.value, n, q_heads, kv_heads, num_pages, desc.mode)
        self._plans.add(plan)
        return plan

    def forward(self, plan: "Plan", q: Any, k_cache: Any, v_cache: Any, out: Any = None, **kw) -> Any:
        """Same as ``plan.forward(q, k_cache, v_cache, out, ...)``; see :meth:`Plan.forward`."""
        if not isinstance(plan, Plan) or plan.context is not self:
            raise PatArgumentError("plan", "expected a Plan made by this context")
        return plan.forward(q, k_cache, v_cache, out, **kw)


def _device_index(device: Any) -> int:
    """The CUDA ordinal of an int, "cuda", "cuda:N" or a torch.device."""
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise PatArgumentError("device", f"expected a device ordinal >= 0, got {device}")
        return device
    if isinstance(device, str):
        kind, _, idx = device.partition(":")
        if kind == "cuda" and (idx == "" or idx.isdigit()):
            return int(idx or 0)
    elif getattr(device, "type", None) == "cuda":
        return int(getattr(device, "index", None) or 0)
    raise PatArgumentError("device", f"expected a CUDA device (an ordinal, 'cuda:N' or torch.device), got {device!r}")


class Plan(_Closing):
    """One decode step's schedule (``pat_plan``), reused by every layer.

    Made by :meth:`Context.plan`. Destroyed by :meth:`close`, by the garbage collector, or
    with its context. Destroying waits for the plan's metadata upload, not for forwards
    that use it: keep the plan alive until the step's forwards are queued (the C library
    copies what the kernels need to the device at creation).
    """

    def __init__(self, context: Context, handle: int, num_queries: int, q_heads: int, kv_heads: int,
                 num_pages: int, mode: int):
        self.context = context
        self._handle = handle
        self.num_queries = num_queries
        self.q_heads = q_heads
        self.kv_heads = kv_heads
        self.num_pages = num_pages
        self.mode = "direct" if mode == MODE_DIRECT else "prefix"

    def close(self) -> None:
        """Destroys the plan (``pat_plan_destroy``). Idempotent."""
        h, self._handle = self._handle, None
        if h and self.context._handle:
            self.context._lib.pat_plan_destroy(h)

    def _require(self) -> int:
        if not self._handle:
            raise PatError("the plan is closed")
        self.context._require()
        return self._handle

    @property
    def info(self) -> PlanInfo:
        """Packs, CTAs, launches, merges, KV tokens read and unique, host build time, masked packs."""
        raw = _lib.PlanInfo()
        st = self.context._lib.pat_plan_get_info(self._require(), ctypes.byref(raw))
        self.context._check(st, "pat_plan_get_info")
        return PlanInfo(raw.num_packs, raw.num_ctas, raw.num_launches, raw.num_merges, raw.num_slots,
                        raw.kv_tokens_read, raw.kv_tokens_unique, raw.build_us, raw.num_masked_packs)

    @property
    def workspace_size(self) -> int:
        """Device workspace bytes :meth:`forward` needs (partial outputs and LSEs)."""
        return int(self.context._lib.pat_plan_workspace_size(self._require()))

    def forward(self, q: Any, k_cache: Any, v_cache: Any, out: Any = None, *, scale: float | None = None,
                workspace: Any = None, stream: Any = None) -> Any:
        """Decode attention for one layer (``pat_forward``) on PyTorch's current stream.

        Args:
            q: [num_queries, q_heads, head_dim] (or [num_queries, q_heads * head_dim]) in the
                spec's dtype on the context's device; rows may be strided (a multiple of 8
                elements apart), heads and head_dim must be dense.
            k_cache, v_cache: [num_pages, page_size, kv_heads, head_dim], contiguous (vLLM's
                layout; for a FlashAttention-style [2, ...] tensor pass kv[0] and kv[1]).
            out: like q (same shape rules); None: a new tensor like q (needs PyTorch).
            scale: softmax scale; None: 1/sqrt(head_dim).
            workspace: a CUDA uint8 tensor of at least :attr:`workspace_size` bytes; None: the
                context's own buffer (grown on demand, synchronising once when it grows).
            stream: None: PyTorch's current stream of the device; or a torch.cuda.Stream or an
                int handle.

        Returns:
            out.

        Raises:
            PatArgumentError: naming the bad argument (dtype, device, shape, strides,
                alignment).
            PatError: the launch failed (the library's detail in the message).
        """
        ctx = self.context
        handle = self._require()
        D, P = ctx.head_dim, ctx.page_size
        dev = ("cuda", ctx.device)
        dt = ctx.dtype
        n, H, KH = self.num_queries, self.q_heads, self.kv_heads
        q_stride = _check_rows("q", q, n, H, D, dt, dev)
        if out is None:
            import torch

            out = torch.empty((n, H, D), dtype=q.dtype, device=q.device)
        o_stride = _check_rows("out", out, n, H, D, dt, dev)
        kv_dims = "[num_pages, page_size, kv_heads, head_dim]"
        ks = check_tensor("k_cache", k_cache, dtype=dt, device=dev, shape=(None, P, KH, D), dims=kv_dims,
                          contiguous=True)
        vs = check_tensor("v_cache", v_cache, dtype=dt, device=dev, shape=(None, P, KH, D), dims=kv_dims,
                          contiguous=True)
        if ks[0] < self.num_pages:
            raise PatArgumentError("k_cache", f"has {ks[0]} pages, the plan was made for num_pages={self.num_pages}")
        if vs[0] < self.num_pages:
            raise PatArgumentError("v_cache", f"has {vs[0]} pages, the plan was made for num_pages={self.num_pages}")
        ws_ptr, ws_bytes = 0, 0
        if workspace is not None:
            wsh = check_tensor("workspace", workspace, device=dev, contiguous=True)
            ws_bytes = math.prod(wsh) * ITEM_SIZES.get(dtype_name(workspace) or "", 1)
            ws_ptr = data_ptr(workspace)
            need = self.workspace_size
            if ws_bytes < need:
                raise PatArgumentError("workspace", f"has {ws_bytes} bytes, the plan needs {need}")
        ptrs = {"q": data_ptr(q), "k_cache": data_ptr(k_cache), "v_cache": data_ptr(v_cache), "out": data_ptr(out)}
        if workspace is not None:
            ptrs["workspace"] = ws_ptr
        for nm, p in ptrs.items():
            if p % 16:
                raise PatArgumentError(nm, f"data pointer 0x{p:x} is not 16-byte aligned")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
            raise PatArgumentError("scale", f"expected a positive finite number, got {scale!r}")
        t = _lib.Tensors(q=ptrs["q"], k_cache=ptrs["k_cache"], v_cache=ptrs["v_cache"], out=ptrs["out"],
                         q_stride=q_stride, o_stride=o_stride, scale=float(scale or 0.0))
        st = ctx._lib.pat_forward(ctx._require(), handle, ctypes.byref(t), ws_ptr, ws_bytes,
                                  _stream_handle(stream, ctx.device))
        ctx._check(st, "pat_forward")
        return out


def _check_rows(name: str, x: Any, n: int, H: int, D: int, dtype: str, dev: tuple) -> int:
    """Checks q or out: [n, H, D] or [n, H*D] with dense rows; returns the row stride."""
    shp = check_tensor(name, x, dtype=dtype, device=dev)
    if shp == (n, H, D) or shp == (n, H * D):
        st = strides_of(x)
        if not all(shp[i] == 1 or st[i] == dense_strides(shp)[i] for i in range(1, len(shp))):
            raise PatArgumentError(name, f"heads and head_dim must be contiguous (strides {st}); rows may be strided")
        row = st[0] if n > 1 else H * D
        if row < H * D or row % 8:
            raise PatArgumentError(name, f"row stride {row} must be >= {H * D} and a multiple of 8 elements")
        return row
    raise PatArgumentError(name, f"expected shape ({n}, {H}, {D}) [num_queries, q_heads, head_dim] or "
                                 f"({n}, {H * D}), got {shp}")
