"""Duck-typed inspection and checking of tensor arguments.

Works on PyTorch tensors, NumPy arrays and any object with the same attributes (``shape``,
``dtype``, ``device``, ``stride()`` or ``strides``, ``data_ptr()``), so the checks can be
tested without PyTorch. Nothing here imports torch.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import PatArgumentError

# The element types pat's kernels take, by spec dtype, as PyTorch / NumPy name them.
SPEC_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
ITEM_SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
              "int16": 2, "int32": 4, "int64": 8, "bool": 1}


def dtype_name(x: Any) -> str | None:
    """The element type of x as a bare name ("float16", "int32"), or None for non-tensors."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return None
    s = str(dt)
    if s.startswith("torch."):
        s = s[len("torch."):]
    return {"half": "float16", "float": "float32", "int": "int32", "long": "int64"}.get(s, s)


def device_of(x: Any) -> tuple[str, int | None]:
    """(type, index) of x's device: ("cuda", 0), ("cpu", None); NumPy arrays are on "cpu"."""
    dev = getattr(x, "device", None)
    if dev is None:
        return ("cpu", None)
    if isinstance(dev, str):
        kind, _, idx = dev.partition(":")
        return (kind, int(idx) if idx else (0 if kind == "cuda" else None))
    kind = getattr(dev, "type", None)
    if kind is None:  # NumPy >= 2 arrays have device == "cpu" as a str; anything else
        return ("cpu", None)
    idx = getattr(dev, "index", None)
    if kind == "cuda" and idx is None:
        idx = 0
    return (kind, idx)


def shape_of(x: Any) -> tuple[int, ...]:
    """x.shape as a tuple of ints."""
    return tuple(int(s) for s in x.shape)


def strides_of(x: Any) -> tuple[int, ...]:
    """Strides in elements: ``x.stride()`` (PyTorch) or ``x.strides`` / itemsize (NumPy)."""
    st = getattr(x, "stride", None)
    if callable(st):
        return tuple(int(s) for s in st())
    st = getattr(x, "strides", None)
    if st is not None:
        item = int(getattr(x, "itemsize", 0) or ITEM_SIZES.get(dtype_name(x) or "", 1))
        return tuple(int(s) // item for s in st)
    raise TypeError(f"cannot read the strides of {type(x).__name__}")


def data_ptr(x: Any) -> int:
    """The address of x's first element: ``x.data_ptr()`` or ``x.ctypes.data``."""
    dp = getattr(x, "data_ptr", None)
    if callable(dp):
        return int(dp())
    c = getattr(x, "ctypes", None)
    if c is not None:
        return int(c.data)
    raise TypeError(f"cannot take the address of {type(x).__name__}")


def dense_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a C-contiguous tensor of this shape."""
    out = [1] * len(shape)
    acc = 1
    for i in range(len(shape) - 1, -1, -1):
        out[i] = acc
        acc *= max(int(shape[i]), 1)
    return tuple(out)


def is_dense(shape: Sequence[int], strides: Sequence[int], skip_leading: int = 0) -> bool:
    """True when dims skip_leading.. are C-contiguous (size-1 dims may have any stride)."""
    want = dense_strides(shape)
    return all(shape[i] == 1 or strides[i] == want[i] for i in range(skip_leading, len(shape)))


def is_tensor_like(x: Any) -> bool:
    """True for objects with a shape and a dtype (tensors, arrays, test doubles)."""
    return hasattr(x, "shape") and hasattr(x, "dtype")


def check_tensor(name: str, x: Any, *, dtype: str | Sequence[str] | None = None,
                 device: tuple[str, int | None] | None = None,
                 shape: Sequence[int | None] | None = None, dims: str = "",
                 contiguous: bool = False) -> tuple[int, ...]:
    """Checks one tensor argument and returns its shape.

    Args:
        name: the argument's name, used as the start of every error message.
        x: the tensor.
        dtype: the allowed element type name(s) ("float16").
        device: ("cuda", index) or ("cpu", None): where x must live.
        shape: the expected shape; None entries match any size (the number of entries is
            the number of dimensions).
        dims: a human description of the dimensions for messages ("[num_queries, q_heads,
            head_dim]").
        contiguous: require a C-contiguous tensor.

    Raises:
        PatArgumentError: naming ``name`` and what is wrong.
    """
    if not is_tensor_like(x):
        raise PatArgumentError(name, f"expected a tensor, got {type(x).__name__}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, str) else tuple(dtype)
        got = dtype_name(x)
        if got not in allowed:
            raise PatArgumentError(name, f"expected dtype {' or '.join(allowed)}, got {got}")
    if device is not None:
        got_dev = device_of(x)
        if got_dev[0] != device[0] or (device[0] == "cuda" and got_dev[1] != device[1]):
            where = f"cuda:{device[1]}" if device[0] == "cuda" else device[0]
            have = f"{got_dev[0]}:{got_dev[1]}" if got_dev[1] is not None else got_dev[0]
            raise PatArgumentError(name, f"expected a tensor on {where}, got one on {have}")
    shp = shape_of(x)
    if shape is not None:
        desc = f" {dims}" if dims else ""
        if len(shp) != len(shape):
            raise PatArgumentError(name, f"expected {len(shape)} dimensions{desc}, got shape {shp}")
        for i, (want, got) in enumerate(zip(shape, shp)):
            if want is not None and want != got:
                raise PatArgumentError(
                    name, f"expected shape {_fmt_shape(shape)}{desc}, got {shp} (dimension {i})")
    if contiguous and not is_dense(shp, strides_of(x)):
        raise PatArgumentError(name, f"must be contiguous (shape {shp}, strides {strides_of(x)}); "
                               "call .contiguous() first")
    return shp


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


@dataclass
class HostInt32:
    """A host int32 array handed to the C library: address, shape, row stride (elements).

    ``keep`` holds whatever owns the memory, so it lives as long as this object.
    """

    ptr: int
    shape: tuple[int, ...]
    row_stride: int
    keep: Any

    def tolist(self) -> list:
        """The values as (nested) Python lists (for tests and messages)."""
        n = 1
        for s in self.shape:
            n *= s
        if len(self.shape) == 1:
            arr = (ctypes.c_int32 * max(self.shape[0], 1)).from_address(self.ptr)
            return [int(arr[i]) for i in range(self.shape[0])]
        rows, cols = self.shape
        total = (rows - 1) * self.row_stride + cols if rows else 0
        arr = (ctypes.c_int32 * max(total, 1)).from_address(self.ptr)
        return [[int(arr[r * self.row_stride + c]) for c in range(cols)] for r in range(rows)]


def _from_sequence(name: str, x: Any, ndim: int) -> HostInt32:
    rows = list(x)
    if ndim == 1:
        vals = []
        for i, v in enumerate(rows):
            if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
                raise PatArgumentError(f"{name}[{i}]", f"expected an integer, got {type(v).__name__}")
            vals.append(int(v))
        shape = (len(vals),)
        stride = 1
    else:
        vals, width = [], None
        for r, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) and not hasattr(row, "tolist"):
                raise PatArgumentError(name, f"expected a 2-D table, row {r} is a {type(row).__name__}")
            row = list(row.tolist() if hasattr(row, "tolist") else row)
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise PatArgumentError(name, f"rows must have the same length (row 0 has {width}, "
                                       f"row {r} has {len(row)})")
            for c, v in enumerate(row):
                if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
                    raise PatArgumentError(f"{name}[{r}][{c}]", f"expected an integer, got {type(v).__name__}")
                vals.append(int(v))
        width = width or 0
        shape = (len(rows), width)
        stride = width
    for i, v in enumerate(vals):
        if not -(1 << 31) <= v < (1 << 31):
            raise PatArgumentError(name, f"value {v} does not fit int32")
    buf = (ctypes.c_int32 * max(len(vals), 1))(*vals)
    return HostInt32(ctypes.addressof(buf), shape, stride, buf)


def host_int32(name: str, x: Any, ndim: int) -> HostInt32:
    """Makes a host int32 array of ndim (1 or 2) dimensions from x for the C library.

    x may be a PyTorch tensor (int32; a CUDA tensor is copied to the host, which
    synchronises with its stream), a NumPy array (int32), any object with ``tolist()``, or
    (nested) lists of ints. Inner dimensions are made contiguous (a copy when needed); for a
    2-D table with contiguous rows the row stride is passed through, so a slice of a larger
    table costs nothing.

    Raises:
        PatArgumentError: wrong dtype or number of dimensions, ragged rows, non-integers.
    """
    if isinstance(x, HostInt32):
        if len(x.shape) != ndim:
            raise PatArgumentError(name, f"expected {ndim} dimensions, got shape {x.shape}")
        return x
    if is_tensor_like(x):
        dt = dtype_name(x)
        if dt != "int32":
            raise PatArgumentError(name, f"expected dtype int32, got {dt}")
        shp = shape_of(x)
        if len(shp) != ndim:
            what = "[num_seqs]" if ndim == 1 else "[num_seqs, max_blocks]"
            raise PatArgumentError(name, f"expected {ndim} dimensions {what}, got shape {shp}")
        kind, _ = device_of(x)
        if kind != "cpu":
            cpu = getattr(x, "cpu", None)
            if not callable(cpu):
                raise PatArgumentError(name, f"expected a host tensor, got one on {kind}")
            x = cpu()
        if callable(getattr(x, "data_ptr", None)) or getattr(x, "ctypes", None) is not None:
            st = strides_of(x)
            if ndim == 1:
                if shp[0] > 1 and st[0] != 1:
                    x = _contiguous(x)
                return HostInt32(data_ptr(x), shp, 1, x)
            if shp[1] > 1 and st[1] != 1 or shp[0] > 1 and st[0] < shp[1]:
                x = _contiguous(x)
                st = strides_of(x)
            row = st[0] if shp[0] > 1 else shp[1]
            return HostInt32(data_ptr(x), shp, row, x)
        tolist = getattr(x, "tolist", None)
        if callable(tolist):
            return _from_sequence(name, tolist(), ndim)
        raise PatArgumentError(name, f"cannot read {type(x).__name__} as a host int32 array")
    if isinstance(x, (list, tuple)):
        return _from_sequence(name, x, ndim)
    raise PatArgumentError(name, f"expected a tensor or a list of ints, got {type(x).__name__}")


def _contiguous(x: Any) -> Any:
    c = getattr(x, "contiguous", None)
    if callable(c):
        return c()
    import numpy as np  # only NumPy arrays reach this point without .contiguous()

    return np.ascontiguousarray(x)
