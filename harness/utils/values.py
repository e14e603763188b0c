"""Values from files and flags made safe: fractions like "8/255", stable hashes, derived seeds.

Nothing here evaluates a string as code: a fraction is parsed by a regular expression.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from harness.utils.errors import UserError

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_FRACTION = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+))?\s*$"
)


def parse_number(value: Any, what: str) -> float:
    """A float from a number or a string such as ``"8/255"`` or ``"0.1"``."""
    if isinstance(value, bool):
        raise UserError(f"{what} must be a number, got {value!r}")
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer beyond 1.8e308, which TOML and Python both allow
            raise UserError(
                f"{what} is too large: an integer of {value.bit_length()} bits"
            ) from None
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            num, den = match.groups()
            if den is not None and float(den) == 0:
                raise UserError(f"{what} = {value!r} divides by zero")
            return float(num) / (float(den) if den is not None else 1.0)
    raise UserError(f'{what} must be a number or a fraction like "8/255", got {value!r}')


def coerce(value: Any, default: Any, what: str, choices: tuple[Any, ...] | None = None) -> Any:
    """Convert ``value`` to the type of ``default`` (int→float, "8/255"→float), or fail clearly."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{what} must be true or false, got {value!r}")
        out: Any = value
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{what} must be an integer, got {value!r}")
        out = value
    elif isinstance(default, float):
        out = parse_number(value, what)
        if out != out or out in (float("inf"), float("-inf")):
            raise UserError(f"{what} must be finite, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise UserError(f"{what} must be a string, got {value!r}")
        out = value
    else:
        out = value
    if choices is not None and out not in choices:
        raise UserError(f"{what} = {out!r} is not one of {', '.join(map(repr, choices))}")
    return out


def canonical_json(obj: Any) -> str:
    """Sorted, compact JSON; a typed value (a run config) in its JSON form (``to_json()``)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_form
    )


def _json_form(obj: Any) -> Any:
    if hasattr(obj, "to_json"):
        return obj.to_json()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def config_hash(obj: Any, length: int = 10) -> str:
    """A stable id for a resolved config: the same config always hashes the same."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (run seed, "epoch", 3, ...), stable across processes."""
    digest = hashlib.sha256(canonical_json([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def is_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file; False, not OSError, for a name the file system cannot hold."""
    try:
        return Path(path).is_file()
    except OSError:  # ENAMETOOLONG and the like: no such file can exist
        return False


def file_sha256(path: Any, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(value: Any, what: str) -> str:
    """``value`` as a sha256 digest in lower case: exactly 64 hex digits, or a one-line error."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise UserError(f"{what} must be a sha256 digest (64 hex digits), got {value!r}")
    return value.lower()


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists and empty tables are values)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}
