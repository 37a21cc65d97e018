"""Reading the few facts of a spec the binding checks tensors against.

A :class:`~pat.Context` takes these facts from the library (``pat_context_spec_info``).
:func:`read_spec` reads them from a spec file without a GPU or the library (for engine
configuration before a context exists): with PyYAML when it is installed, else with a small
reader of the top-level ``key: value`` lines (enough for every spec in specs/). The C library
remains the judge of whether a spec is valid. Absent keys take the defaults of
specs/README.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULTS = {"dtype": "fp16", "head_dim": 128, "page_size": 32, "gqa": [1, 2, 4, 8]}


@dataclass(frozen=True)
class SpecSummary:
    """The facts of a spec that tensor checks need."""

    path: str
    name: str
    dtype: str = "fp16"  # "fp16" or "bf16"
    head_dim: int = 128
    page_size: int = 32
    gqa: tuple[int, ...] = field(default=(1, 2, 4, 8))

    @property
    def torch_dtype_name(self) -> str:
        """The element type as PyTorch names it ("float16", "bfloat16")."""
        return {"fp16": "float16", "bf16": "bfloat16"}[self.dtype]


_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")


def _strip_comment(s: str) -> str:
    out, quote = [], None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
            break
        out.append(ch)
    return "".join(out).rstrip()


def _scalar(v: str):
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    if v.startswith("[") and v.endswith("]"):
        inner = v[1:-1].strip()
        return [_scalar(p) for p in inner.split(",")] if inner else []
    return v


def parse_spec_text(text: str, path: str = "<spec>") -> SpecSummary:
    """Reads name, dtype, head_dim, page_size and gqa from spec text (top-level keys only).

    Raises:
        ValueError: a value of one of those keys has the wrong type.
    """
    values: dict = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = _strip_comment(lines[i])
        i += 1
        if not raw or raw[0] in " \t-" or raw.startswith("---"):
            continue
        m = _LINE.match(raw)
        if not m:
            continue
        key, val = m.group(1), m.group(2)
        if val == "":
            items = []  # a block sequence ("gqa:" then "  - 4" lines)
            while i < len(lines):
                nxt = _strip_comment(lines[i])
                if nxt and nxt[0] not in " \t-":
                    break
                i += 1
                s = nxt.strip()
                if s.startswith("- ") or s == "-":
                    items.append(_scalar(s[1:]))
            values[key] = items
        else:
            values[key] = _scalar(val)
    return _summary(values, path)


def _summary(values: dict, path: str) -> SpecSummary:
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in values.items() if k in ("name", "dtype", "head_dim", "page_size", "gqa")})
    gqa = merged["gqa"]
    if isinstance(gqa, int):
        gqa = [gqa]
    dtype = merged["dtype"]
    if dtype not in ("fp16", "bf16"):
        raise ValueError(f"{path}: dtype: expected fp16 or bf16, got {dtype!r}")
    for key in ("head_dim", "page_size"):
        if not isinstance(merged[key], int) or isinstance(merged[key], bool):
            raise ValueError(f"{path}: {key}: expected an integer, got {merged[key]!r}")
    if not isinstance(gqa, list) or not all(isinstance(g, int) for g in gqa):
        raise ValueError(f"{path}: gqa: expected an integer or a list of integers, got {gqa!r}")
    return SpecSummary(path=path, name=str(merged.get("name", "")), dtype=dtype,
                       head_dim=merged["head_dim"], page_size=merged["page_size"], gqa=tuple(gqa))


def read_spec(path: str | Path) -> SpecSummary:
    """Reads a spec file's dtype, head_dim, page_size and GQA ratios.

    Uses PyYAML when importable (anchors, aliases and every YAML form), else
    :func:`parse_spec_text`.

    Raises:
        OSError: the file cannot be read.
        ValueError: one of those values has the wrong type.
    """
    path = str(path)
    text = Path(path).read_text()
    try:
        import yaml  # type: ignore
    except ImportError:
        return parse_spec_text(text, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return parse_spec_text(text, path)  # the library will report the syntax error
    if not isinstance(data, dict):
        return parse_spec_text(text, path)
    return _summary(data, path)
