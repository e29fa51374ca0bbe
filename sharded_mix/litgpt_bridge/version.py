"""The one version check of the bridge, and the frame walk its readers share."""

from __future__ import annotations

import functools
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

SUPPORTED_LITGPT = ((0, 5, 13), (0, 6, 0))
"""The litgpt releases whose loop this bridge was written against: >= 0.5.13, < 0.6."""
SUPPORTED_RANGE = "litgpt>=0.5.13,<0.6"


def _release(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(char for char in part if char.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers + [0] * (3 - len(numbers)))


@functools.cache
def require_supported_litgpt() -> str:
    """The installed litgpt version; a ``RuntimeError`` naming the supported range if it is outside it."""
    try:
        installed = version("litgpt")
    except PackageNotFoundError:
        installed = "not installed"
    low, high = SUPPORTED_LITGPT
    if installed == "not installed" or not low <= _release(installed) < high:
        raise RuntimeError(
            f"sharded_mix's LitGPT bridge supports {SUPPORTED_RANGE}, and litgpt is {installed}: its loop, checkpoints "
            f"and LR hook may differ. Install {SUPPORTED_RANGE!r}."
        )
    return installed


def _calling_local(name: str, kind: type) -> Any:
    """The local ``name`` of type ``kind`` in the nearest calling frame that has one, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        value = frame.f_locals.get(name)
        if isinstance(value, kind):
            return value
        frame = frame.f_back
    return None
