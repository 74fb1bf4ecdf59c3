"""How long a camera's segments are kept: `--retain 7d`, `--retain 50GB`, `--retain 7d,50GB`.

Parsed once into `Retention` (settings hold it); `segments.apply_retention` applies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Retention:
    """Keep segments at most `max_age_s` seconds old and/or `max_bytes` in all (None: no limit)."""

    max_age_s: Optional[float] = None
    max_bytes: Optional[int] = None

    def describe(self) -> str:
        parts = []
        if self.max_age_s is not None:
            parts.append(f"{self.max_age_s / 86400:g} days" if self.max_age_s >= 86400 else f"{self.max_age_s:g} s")
        if self.max_bytes is not None:
            parts.append(f"{self.max_bytes / 1e9:g} GB" if self.max_bytes >= 1e9 else f"{self.max_bytes / 1e6:g} MB")
        return " or ".join(parts)


_AGE_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
               "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_retention(text: str) -> Retention:
    """`7d`, `12h`, `50GB`, `500MiB`, or an age and a size: `7d,50GB` (ValueError with the cause)."""
    age = size = None
    for part in str(text).split(","):
        match = _LIMIT.match(part)
        unit = match.group(2).lower() if match else ""
        if match and unit in _AGE_UNITS and age is None:
            age = float(match.group(1)) * _AGE_UNITS[unit]
        elif match and unit in _SIZE_UNITS and size is None:
            size = int(float(match.group(1)) * _SIZE_UNITS[unit])
        else:
            raise ValueError(f"{part.strip()!r} is not an age (30m, 12h, 7d, 2w) or a size (500MB, 50GB, 1TB); "
                             "give one of each at most, comma-separated (7d,50GB)")
    if (age is not None and age <= 0) or (size is not None and size <= 0):
        raise ValueError(f"{text!r}: a limit must be more than 0")
    return Retention(age, size)
