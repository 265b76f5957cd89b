"""Lossless JSON for ``info`` dicts, task ids and reset options sent over the wire.

JSON has no tuples, bytes or non-string keys, but task ids can be tuples and web
environments put PNG bytes (screenshots) into ``info``; UTF-8 has no lone surrogates, but an
action text may hold one and ``info["raw_action"]`` echoes it.  :func:`encode` turns such values
into tagged JSON objects and :func:`decode` turns them back, so an ``info`` that crossed
a server is equal (``==``) to the local one.  NumPy scalars become Python numbers.

Example:
    >>> value = {"task_id": ("kitchen", 3), "screenshot": b"\\x89PNG", "score": 1.5}
    >>> decode(encode(value)) == value
    True
    >>> import json; json.dumps(encode(value))  # doctest: +ELLIPSIS
    '{"task_id": {"__tuple__": ["kitchen", 3]}, ...'
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

_TUPLE, _BYTES, _DICT, _FLOAT, _PATH = "__tuple__", "__bytes__", "__dict__", "__float__", "__path__"
_STR = "__str__"
_TAGS = (_TUPLE, _BYTES, _DICT, _FLOAT, _PATH, _STR)

# ``info`` keys whose values depend on the wall clock: they differ between any two runs, local or
# remote, and are left out when episodes are compared.  ``miniwob_reward`` is MiniWoB's own reward,
# scaled by the time the episode took (the environment's reward uses the unscaled one).
WALL_CLOCK_KEYS = ("elapsed_s", "miniwob_reward")


def encode(value: Any) -> Any:
    """A JSON-serialisable form of ``value`` that :func:`decode` inverts exactly."""
    if isinstance(value, str):
        return value if utf8_safe(value) else {_STR: base64.b64encode(value.encode("utf-16-le", "surrogatepass")).decode()}
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        # NaN and infinities are not JSON.
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    if isinstance(value, (list,)):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v) for v in value]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, PurePath):
        return {_PATH: str(value)}
    if isinstance(value, Mapping):
        plain_keys = all(isinstance(k, str) and utf8_safe(k) for k in value)
        if plain_keys and not (len(value) == 1 and next(iter(value)) in _TAGS):
            return {k: encode(v) for k, v in value.items()}
        return {_DICT: [[encode(k), encode(v)] for k, v in value.items()]}
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return encode(item())
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return encode(tolist())
    raise TypeError(f"cannot send a {type(value).__name__} over the wire: {value!r:.80}")


def decode(value: Any) -> Any:
    """The value that :func:`encode` was given."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag == _TUPLE:
                return tuple(decode(v) for v in inner)
            if tag == _BYTES:
                return base64.b64decode(inner)
            if tag == _DICT:
                return {decode(k): decode(v) for k, v in inner}
            if tag == _FLOAT:
                return float(inner)
            if tag == _STR:
                return base64.b64decode(inner).decode("utf-16-le", "surrogatepass")
            if tag == _PATH:
                from pathlib import Path

                return Path(inner)
        return {k: decode(v) for k, v in value.items()}
    return value


def utf8_safe(text: str) -> bool:
    """Whether UTF-8 (and so JSON on the wire) can carry ``text``: no lone surrogates.

    Example:
        >>> utf8_safe("caf\u00e9"), utf8_safe("go" + chr(0xDC80) + "north")
        (True, False)
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def comparable_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` without the wall-clock keys (what must be equal between two runs of one episode)."""
    return {k: v for k, v in info.items() if k not in WALL_CLOCK_KEYS}
