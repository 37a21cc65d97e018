"""Test setup: import the package from this checkout, and a tensor stand-in for tests
that run without PyTorch."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parent.parent
REPO = PYTHON_DIR.parent
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))

ITEM = {"float16": 2, "bfloat16": 2, "float32": 4, "int32": 4, "int64": 8, "uint8": 1}


class FakeTensor:
    """Just enough of a tensor for the binding's checks: shape, dtype (a name), device (a
    string), stride(), data_ptr(), is_contiguous(), tolist() and [i] on the first dim."""

    def __init__(self, shape, dtype="float16", device="cuda:0", strides=None, ptr=0x10000, values=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = device
        if strides is None:
            strides, acc = [], 1
            for s in reversed(self.shape):
                strides.insert(0, acc)
                acc *= s
        self._strides = tuple(strides)
        self._ptr = ptr
        self._values = values

    def stride(self):
        return self._strides

    def data_ptr(self):
        return self._ptr

    def tolist(self):
        if self._values is None:
            raise TypeError("no values")
        return self._values

    def __getitem__(self, i):
        return FakeTensor(self.shape[1:], self.dtype, self.device, self._strides[1:],
                          self._ptr + i * self._strides[0] * ITEM.get(self.dtype, 1))


@pytest.fixture
def fake():
    """The FakeTensor class."""
    return FakeTensor


def spec_path(name: str) -> str:
    """A spec of the repository, by file name."""
    return str(REPO / "specs" / name)


DEMO_SPEC = str(PYTHON_DIR / "examples" / "specs" / "llama3_8b_page32.yaml")
