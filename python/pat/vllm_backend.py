"""A vLLM attention backend that runs decode steps on pat.

Follows the V1-engine attention interface of vLLM 0.10 (``vllm/v1/attention/backends/
flash_attn.py`` of v0.10.1/v0.10.2): an ``AttentionBackend`` whose KV cache has the
FlashAttention shape ``[2, num_blocks, block_size, num_kv_heads, head_size]``, a metadata
builder ``build(common_prefix_len, common_attn_metadata, fast_build=False)`` and an
``AttentionImpl`` with ``forward(layer, query, key, value, kv_cache, attn_metadata, output,
output_scale=None, output_block_scale=None)``.

This module imports without vLLM (and without PyTorch): the vLLM base classes are used
when vLLM is importable, plain stand-ins otherwise, and the conversion helpers
(:func:`decode_batch_from_vllm`, :func:`split_kv_cache`, :func:`slot_mapping_for_decode`)
need neither.

Scope: decode batches (one query token per request), NHD cache layout, fp16/bf16 KV, no
ALiBi, sliding window, logit soft cap, sinks or fp8 KV cache; a prefill or mixed batch
raises ``NotImplementedError`` (keep such steps on the FlashAttention backend).

Which spec: ``PAT_SPEC`` (environment) or :func:`configure`. Its dtype, head_dim and
page_size must match the model's dtype, head size and vLLM's block size.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from ._tensors import HostInt32, check_tensor, host_int32, is_dense, shape_of, strides_of
from .errors import PatArgumentError

# ---------------------------------------------------------------- vLLM (optional)
try:  # vLLM 0.10.x
    from vllm.attention.backends.abstract import AttentionBackend, AttentionImpl, AttentionType  # type: ignore
    VLLM_AVAILABLE = True
except Exception:  # not installed (or a release that moved the module)
    try:  # later releases moved the abstract classes here
        from vllm.v1.attention.backend import AttentionBackend, AttentionImpl, AttentionType  # type: ignore
        VLLM_AVAILABLE = True
    except Exception:
        VLLM_AVAILABLE = False

        class AttentionBackend:  # type: ignore[no-redef]
            """Stand-in for vllm's AttentionBackend when vLLM is not installed."""

        class AttentionImpl:  # type: ignore[no-redef]
            """Stand-in for vllm's AttentionImpl when vLLM is not installed."""

        class AttentionType:  # type: ignore[no-redef]
            """Stand-in for vllm's AttentionType (string constants, as in vLLM)."""

            DECODER = "decoder"
            ENCODER = "encoder"
            ENCODER_ONLY = "encoder_only"
            ENCODER_DECODER = "encoder_decoder"

try:
    from vllm.v1.attention.backends.utils import AttentionMetadataBuilder  # type: ignore
except Exception:
    try:
        from vllm.v1.attention.backend import AttentionMetadataBuilder  # type: ignore
    except Exception:
        class AttentionMetadataBuilder:  # type: ignore[no-redef]
            """Stand-in for vllm's AttentionMetadataBuilder when vLLM is not installed."""

            def __class_getitem__(cls, item):
                return cls

try:
    from vllm.v1.attention.backends.utils import AttentionCGSupport  # type: ignore
    _CG_NEVER = AttentionCGSupport.NEVER
except Exception:
    _CG_NEVER = None

# ---------------------------------------------------------------- conversion (pure Python)


@dataclass
class DecodeBatch:
    """A vLLM decode step as pat needs it: host block table and sequence lengths.

    Attributes:
        block_table: host int32 [>= num_reqs, max_blocks] (only the first num_reqs rows
            are read).
        seq_lens: host int32 [num_reqs].
        num_reqs: requests (= query tokens) in the step.
        block_size: tokens per block (pat's page_size).
    """

    block_table: HostInt32
    seq_lens: HostInt32
    num_reqs: int
    block_size: int

    @property
    def max_blocks(self) -> int:
        """Columns of the block table."""
        return self.block_table.shape[1]


def decode_batch_from_vllm(block_table: Any, seq_lens: Any, *, block_size: int, num_reqs: int | None = None,
                           query_start_loc: Any = None) -> DecodeBatch:
    """Converts vLLM decode metadata to a pat batch (host arrays, no copy when already on the host).

    Args:
        block_table: vLLM's ``block_table_tensor``: int32 [num_reqs (or more), max_blocks].
        seq_lens: int32 [num_reqs (or more)]: tokens each request attends to, the new one
            included (vLLM's ``seq_lens``; prefer ``seq_lens_cpu``).
        block_size: vLLM's block size.
        num_reqs: requests in the step; None: len(seq_lens).
        query_start_loc: int32 [num_reqs + 1] (``query_start_loc_cpu``); when given, every
            request must have exactly one query token.

    CUDA tensors are copied to the host (a synchronisation); pass the CPU copies vLLM keeps.

    Raises:
        PatArgumentError: wrong dtypes or shapes, or a sequence length that is < 1 or does
            not fit its block-table row.
        NotImplementedError: a request with more than one query token (prefill, chunked
            prefill, speculative decoding).
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise PatArgumentError("block_size", f"expected a positive int, got {block_size!r}")
    bt = host_int32("block_table", block_table, 2)
    sl = host_int32("seq_lens", seq_lens, 1)
    n = sl.shape[0] if num_reqs is None else int(num_reqs)
    if n < 1:
        raise PatArgumentError("seq_lens", "the batch is empty")
    if n > sl.shape[0]:
        raise PatArgumentError("seq_lens", f"has {sl.shape[0]} entries, num_reqs is {n}")
    if n > bt.shape[0]:
        raise PatArgumentError("block_table", f"has {bt.shape[0]} rows, num_reqs is {n}")
    if n < sl.shape[0]:
        sl = HostInt32(sl.ptr, (n,), 1, sl.keep)
    if query_start_loc is not None:
        qsl = host_int32("query_start_loc", query_start_loc, 1).tolist()
        if len(qsl) < n + 1:
            raise PatArgumentError("query_start_loc", f"has {len(qsl)} entries, expected num_reqs + 1 = {n + 1}")
        for i in range(n):
            if qsl[i + 1] - qsl[i] != 1:
                raise NotImplementedError(
                    f"request {i} has {qsl[i + 1] - qsl[i]} query tokens: the pat backend runs decode "
                    "steps only (one query token per request); run prefill on another backend")
    cap = bt.shape[1] * block_size
    for i, s in enumerate(sl.tolist()):
        if s < 1 or s > cap:
            raise PatArgumentError(f"seq_lens[{i}]", f"{s} tokens, expected 1..{cap} "
                                   f"({bt.shape[1]} blocks of {block_size})")
    return DecodeBatch(bt, sl, n, block_size)


def split_kv_cache(kv_cache: Any, num_kv_heads: int | None = None, head_size: int | None = None) -> tuple[Any, Any]:
    """Splits a FlashAttention-layout cache [2, num_blocks, block_size, num_kv_heads,
    head_size] into its key and value halves, each [num_blocks, block_size, num_kv_heads,
    head_size] (views, no copy).

    Raises:
        PatArgumentError: not 5-D with a leading 2, other head counts/sizes than given, or
            not NHD-contiguous inside each half (vLLM's "HND" layout is refused).
    """
    shp = check_tensor("kv_cache", kv_cache, shape=(2, None, None, num_kv_heads, head_size),
                       dims="[2, num_blocks, block_size, num_kv_heads, head_size]")
    if not is_dense(shp, strides_of(kv_cache), skip_leading=1):
        raise PatArgumentError("kv_cache", f"each half must be contiguous [num_blocks, block_size, num_kv_heads, "
                               f"head_size] (NHD layout); got strides {strides_of(kv_cache)}")
    return kv_cache[0], kv_cache[1]


def slot_mapping_for_decode(block_table: Any, seq_lens: Any, block_size: int) -> list[int]:
    """vLLM's slot mapping of a decode step: for request i, the cache slot of its newest
    token (position seq_lens[i] - 1): ``block_table[i][pos // block_size] * block_size +
    pos % block_size``. Pure Python (for tests and small engines)."""
    bt = host_int32("block_table", block_table, 2).tolist()
    out = []
    for i, s in enumerate(host_int32("seq_lens", seq_lens, 1).tolist()):
        pos = s - 1
        out.append(bt[i][pos // block_size] * block_size + pos % block_size)
    return out


def write_kv_cache(key: Any, value: Any, key_cache: Any, value_cache: Any, slot_mapping: Any) -> None:
    """Stores the step's keys and values in the paged cache (what vLLM's
    ``reshape_and_cache_flash`` does for the NHD layout), with PyTorch ops.

    key, value: [num_tokens (>= len(slot_mapping)), num_kv_heads, head_size];
    key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_size];
    slot_mapping: int64 [num_actual_tokens]; negative slots (padding) are skipped.
    """
    import torch

    n = int(slot_mapping.shape[0])
    if n == 0:
        return
    nb, bs, kvh, hs = shape_of(key_cache)
    slots = slot_mapping.to(torch.long)
    k = key[:n].reshape(n, kvh, hs).to(key_cache.dtype)
    v = value[:n].reshape(n, kvh, hs).to(value_cache.dtype)
    keep = slots >= 0
    if not bool(keep.all()):
        slots, k, v = slots[keep], k[keep], v[keep]
    key_cache.view(nb * bs, kvh, hs).index_copy_(0, slots, k)
    value_cache.view(nb * bs, kvh, hs).index_copy_(0, slots, v)


# ---------------------------------------------------------------- configuration and contexts
_config_lock = threading.Lock()
_config: dict = {"spec_path": None, "mode": None, "cache_dir": None}
_contexts: dict = {}


def configure(spec_path: str | None = None, mode: str | None = None, cache_dir: str | None = None) -> None:
    """Sets the spec (else ``$PAT_SPEC``), the mode ("prefix" or "direct"; else
    ``$PAT_MODE``, default "prefix") and the kernel cache folder used by the backend."""
    with _config_lock:
        if spec_path is not None:
            _config["spec_path"] = str(spec_path)
        if mode is not None:
            _config["mode"] = mode
        if cache_dir is not None:
            _config["cache_dir"] = cache_dir


def _spec_path() -> str:
    p = _config["spec_path"] or os.environ.get("PAT_SPEC")
    if not p:
        raise RuntimeError("the pat vLLM backend needs a spec: set PAT_SPEC=/path/spec.yaml or call "
                           "pat.vllm_backend.configure(spec_path=...)")
    return p


def _mode() -> str:
    return _config["mode"] or os.environ.get("PAT_MODE", "prefix")


def get_context(device: int, *, num_kv_heads: int, head_size: int, dtype_name: str, block_size: int):
    """The shared pat Context for the configured spec on a device (created once), checked
    against the model's head size, dtype and block size.

    Raises:
        PatArgumentError: the spec does not match the model or the cache.
    """
    from .core import Context

    path = _spec_path()
    key = (path, device)
    with _config_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = Context(path, device, cache_dir=_config["cache_dir"])
            _contexts[key] = ctx
    if ctx.head_dim != head_size:
        raise PatArgumentError("head_size", f"{head_size}, but spec {path} has head_dim {ctx.head_dim}")
    if ctx.dtype != dtype_name:
        raise PatArgumentError("kv_cache", f"dtype {dtype_name}, but spec {path} is {ctx.spec.dtype}")
    if ctx.page_size != block_size:
        raise PatArgumentError("block_size", f"{block_size}, but spec {path} has page_size {ctx.page_size}")
    return ctx


# ---------------------------------------------------------------- the backend classes
@dataclass
class PatMetadata:
    """Per-step metadata (the FlashAttention fields the pat path uses, plus the host batch).

    The pat plan is made by the first layer that runs (it knows the cache and head counts)
    and reused by the others.
    """

    num_actual_tokens: int
    max_query_len: int
    query_start_loc: Any
    max_seq_len: int
    seq_lens: Any
    block_table: Any
    slot_mapping: Any
    batch: DecodeBatch
    causal: bool = True
    _plans: dict = field(default_factory=dict, repr=False)

    def plan(self, ctx: Any, q_heads: int, kv_heads: int, num_blocks: int, mode: str):
        """The step's pat plan for these head counts (made once, then cached)."""
        key = (id(ctx), q_heads, kv_heads, num_blocks, mode)
        p = self._plans.get(key)
        if p is None:
            b = self.batch
            p = ctx.plan(b.block_table, b.seq_lens, q_heads=q_heads, kv_heads=kv_heads, num_pages=num_blocks,
                         mode=mode)
            self._plans[key] = p
        return p


def build_metadata(common_attn_metadata: Any, block_size: int) -> PatMetadata:
    """Builds :class:`PatMetadata` from vLLM's ``CommonAttentionMetadata`` (0.10 fields:
    num_reqs, num_actual_tokens, max_query_len, max_seq_len, query_start_loc(_cpu),
    seq_lens(_cpu), block_table_tensor, slot_mapping). Host copies are used when present.

    Raises:
        NotImplementedError: not a pure decode step.
        PatArgumentError: bad tensors (see :func:`decode_batch_from_vllm`).
    """
    m = common_attn_metadata
    num_reqs = int(m.num_reqs)
    seq_lens_host = getattr(m, "seq_lens_cpu", None)
    if seq_lens_host is None:
        seq_lens_host = m.seq_lens
    qsl_host = getattr(m, "query_start_loc_cpu", None)
    if qsl_host is None:
        qsl_host = m.query_start_loc
    if int(m.max_query_len) != 1:
        raise NotImplementedError(f"max_query_len is {int(m.max_query_len)}: the pat backend runs decode steps "
                                  "only (one query token per request)")
    batch = decode_batch_from_vllm(m.block_table_tensor, seq_lens_host, block_size=block_size, num_reqs=num_reqs,
                                   query_start_loc=qsl_host)
    return PatMetadata(num_actual_tokens=int(m.num_actual_tokens), max_query_len=int(m.max_query_len),
                       query_start_loc=m.query_start_loc, max_seq_len=int(m.max_seq_len), seq_lens=m.seq_lens,
                       block_table=m.block_table_tensor, slot_mapping=m.slot_mapping, batch=batch,
                       causal=bool(getattr(m, "causal", True)))


class PatMetadataBuilder(AttentionMetadataBuilder):
    """vLLM metadata builder: converts ``CommonAttentionMetadata`` once per step."""

    if _CG_NEVER is not None:
        cudagraph_support = _CG_NEVER  # plans are host-built per step

    def __init__(self, kv_cache_spec: Any, layer_names: Any = None, vllm_config: Any = None, device: Any = None):
        self.kv_cache_spec = kv_cache_spec
        self.layer_names = layer_names
        self.vllm_config = vllm_config
        self.device = device
        self.block_size = int(kv_cache_spec.block_size)

    def build(self, common_prefix_len: int, common_attn_metadata: Any, fast_build: bool = False) -> PatMetadata:
        """Builds the step's :class:`PatMetadata` (``common_prefix_len`` is not needed:
        pat finds every shared prefix from the block table itself)."""
        return build_metadata(common_attn_metadata, self.block_size)

    def use_cascade_attention(self, *args, **kwargs) -> bool:
        """Never: pat shares prefixes itself."""
        return False


class PatAttentionImpl(AttentionImpl):
    """Decode attention on pat with the constructor and forward of vLLM 0.10's
    FlashAttentionImpl."""

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int,
                 alibi_slopes: Optional[list] = None, sliding_window: Optional[int] = None,
                 kv_cache_dtype: str = "auto", logits_soft_cap: Optional[float] = None,
                 attn_type: Any = AttentionType.DECODER, kv_sharing_target_layer_name: Optional[str] = None,
                 sinks: Any = None, **unused: Any) -> None:
        unsupported = []
        if alibi_slopes is not None:
            unsupported.append("ALiBi")
        if sliding_window is not None:
            unsupported.append("sliding window")
        if logits_soft_cap:
            unsupported.append("logit soft cap")
        if sinks is not None:
            unsupported.append("attention sinks")
        if kv_cache_dtype not in ("auto", "float16", "bfloat16", "half"):
            unsupported.append(f"kv_cache_dtype {kv_cache_dtype}")
        if attn_type != AttentionType.DECODER:
            unsupported.append(f"attention type {attn_type}")
        if num_heads % num_kv_heads:
            unsupported.append(f"{num_heads} heads over {num_kv_heads} kv heads")
        if unsupported:
            raise NotImplementedError("the pat backend does not support " + ", ".join(unsupported))
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads
        self.kv_cache_dtype = kv_cache_dtype
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        self.attn_type = attn_type

    def forward(self, layer: Any, query: Any, key: Any, value: Any, kv_cache: Any, attn_metadata: Optional[PatMetadata],
                output: Any = None, output_scale: Any = None, output_block_scale: Any = None) -> Any:
        """Stores key/value of the step in the cache, then runs pat attention into output.

        Args:
            layer: the vLLM Attention layer (unused: no fp8 scales).
            query: [num_tokens, num_heads, head_size].
            key, value: [num_tokens, num_kv_heads, head_size] (None when sharing another
                layer's cache).
            kv_cache: [2, num_blocks, block_size, num_kv_heads, head_size].
            attn_metadata: from :class:`PatMetadataBuilder`; None in vLLM's profiling run.
            output: [num_tokens, num_heads, head_size] (or [num_tokens, num_heads *
                head_size]), written in place.

        Returns:
            output.
        """
        if output is None:
            raise PatArgumentError("output", "the pat backend writes into vLLM's output buffer; it is required")
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("fused output quantization is not supported by the pat backend")
        if attn_metadata is None:  # profiling run
            return output
        key_cache, value_cache = split_kv_cache(kv_cache, self.num_kv_heads, self.head_size)
        if self.kv_sharing_target_layer_name is None and key is not None and value is not None:
            write_kv_cache(key, value, key_cache, value_cache, attn_metadata.slot_mapping)
        n = attn_metadata.batch.num_reqs
        nb, bs = shape_of(key_cache)[:2]
        dev = key_cache.device
        from ._tensors import dtype_name

        ctx = get_context(dev.index or 0, num_kv_heads=self.num_kv_heads, head_size=self.head_size,
                          dtype_name=dtype_name(key_cache), block_size=bs)
        plan = attn_metadata.plan(ctx, self.num_heads, self.num_kv_heads, nb, _mode())
        q = query[:n].view(n, self.num_heads, self.head_size)
        out = output[:n].view(n, self.num_heads, self.head_size)
        plan.forward(q, key_cache, value_cache, out, scale=self.scale)
        return output


class PatAttentionBackend(AttentionBackend):
    """vLLM attention backend class for pat (decode only; FlashAttention's cache shape)."""

    accept_output_buffer: bool = True

    @staticmethod
    def get_name() -> str:
        """The backend's name."""
        return "PAT"

    @staticmethod
    def get_impl_cls() -> type:
        """The AttentionImpl class."""
        return PatAttentionImpl

    @staticmethod
    def get_metadata_cls() -> type:
        """The metadata class."""
        return PatMetadata

    @staticmethod
    def get_builder_cls() -> type:
        """The metadata builder class."""
        return PatMetadataBuilder

    @staticmethod
    def get_kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_size: int) -> tuple:
        """[2, num_blocks, block_size, num_kv_heads, head_size], as FlashAttention's."""
        return (2, num_blocks, block_size, num_kv_heads, head_size)

    @staticmethod
    def get_kv_cache_stride_order() -> tuple:
        """NHD only: the identity permutation."""
        return (0, 1, 2, 3, 4)

    @classmethod
    def get_supported_head_sizes(cls) -> list:
        """Head sizes pat's specs can build."""
        return [64, 128, 256]

    @classmethod
    def get_supported_dtypes(cls) -> list:
        """torch.float16 and torch.bfloat16."""
        import torch

        return [torch.float16, torch.bfloat16]

    @classmethod
    def validate_head_size(cls, head_size: int) -> None:
        """Raises ValueError for a head size pat cannot build."""
        if head_size not in cls.get_supported_head_sizes():
            raise ValueError(f"head size {head_size} is not supported by pat (64, 128 or 256)")
