"""Type checks shared by the config and options dataclasses' ``__post_init__`` validation."""

from __future__ import annotations

import math
import numbers


def is_int(x) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """A finite real number (int or float, Python or numpy), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
