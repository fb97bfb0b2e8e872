"""Type and range checks for configuration values, with errors that name the field.

Why: Python lets ``True`` pass as ``1``, ``1.5`` reach ``range()`` deep inside a training loop,
and ``"a"`` reach ``seed % 2**32`` (a string-formatting TypeError). Each value is checked where
the configuration is built, so the error names the field and what to give instead.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["whole", "number", "seed"]


def whole(name: str, value: Any, low: int | None = None) -> int:
    """``value`` as an int: a whole number (not a bool, not 1.5), at least ``low`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {value!r} "
                        f"({type(value).__name__}); give an int such as 3")
    if low is not None and value < low:
        what = "positive" if low == 1 else f">= {low}"
        raise ValueError(f"{name} must be {what} (a whole number >= {low}), got {value!r}")
    return int(value)


def number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False, high_open: bool = False, what: str | None = None) -> float:
    """A finite real number (not a bool, not a string) in the given range; returned unchanged.

    ``what`` words the range for the error (default: ``"a number in [low, high]"``).
    """
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    fine = is_real and math.isfinite(value)
    if fine:
        fine = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
    if not fine:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        what = what or f"a number in {left}{low}, {high}{right}"
        error = ValueError if is_real else TypeError
        raise error(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    return value


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: a whole number >= 0 (``seed % 2**32`` feeds NumPy)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {value!r} "
                        f"({type(value).__name__}); give an int such as 0")
    return int(value)
