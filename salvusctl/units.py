"""Human-readable sizes: one helper shared by logs, the CLI and the admin pages.

Every place that shows a byte count calls L{humanBytes}, so "1.5 GiB" means the same thing in a log
line, a terminal table and a web page.
"""

from __future__ import annotations

__all__ = ["humanBytes", "parseBytes"]

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def humanBytes(n: int | float | None, decimals: int = 1, binary: bool = True) -> str:
    """Format a byte count with the largest unit that keeps the number at least 1.

    Whole bytes are shown without decimals (C{"512 B"}); larger units with C{decimals} digits,
    trailing zeros dropped (C{"1.5 MiB"}, C{"2 GiB"}).  C{None} (unknown) gives C{"-"}.

    @param binary: powers of 1024 (KiB, MiB …, the default: what RAM and C{du} use) or of 1000
        (kB, MB …: what disk vendors and network rates use).
    @raise TypeError: for anything that is not a number.
    @raise ValueError: for a negative decimals count or a NaN/infinite size.
    """
    if n is None:
        return "-"
    if isinstance(n, bool) or not isinstance(n, int | float):
        raise TypeError(f"humanBytes needs a number of bytes, not {n!r}")
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, not {decimals}")
    if n != n or n in (float("inf"), float("-inf")):
        raise ValueError(f"cannot format {n!r} bytes")
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    step = 1024.0 if binary else 1000.0
    units = _BINARY if binary else _DECIMAL
    index = 0
    while value >= step and index < len(units) - 1:
        value /= step
        index += 1
    if index == 0:
        return f"{sign}{int(round(value))} B"
    text = f"{value:.{decimals}f}"
    # Rounding can reach the next unit: 1023.96 KiB with one decimal is "1024.0 KiB" -> "1 MiB".
    if float(text) >= step and index < len(units) - 1:
        value /= step
        index += 1
        text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{text} {units[index]}"


def parseBytes(text: str | int) -> int:
    """The inverse, for configuration values: C{"512M"}, C{"1.5 GiB"}, C{"200kB"}, C{4096}.

    Single letters (K, M, G, T) and the IEC names are powers of 1024; kB, MB, GB, TB are powers of
    1000.
    @raise ValueError: naming the text that is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"not a size: {text!r}")
    s = text.strip().replace(" ", "")
    number = s.rstrip("BbKkMmGgTtPpiE")
    unit = s[len(number):]
    factors = {"": 1, "B": 1}
    for power, letter in enumerate("KMGTPE", start=1):
        factors[letter] = factors[letter + "iB"] = factors[letter + "B"] = 1024**power
        factors[letter.lower() + "B"] = factors[letter + "B"] = 1000**power
        factors[letter] = 1024**power
    factors["kB"] = 1000
    factors["KiB"] = 1024
    try:
        value = float(number)
        factor = factors[unit]
    except (ValueError, KeyError):
        raise ValueError(f"not a size: {text!r} (examples: 4096, 512M, 1.5GiB, 200kB)")
    if value < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    return int(round(value * factor))
