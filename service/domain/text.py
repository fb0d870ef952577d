"""Text for and from people: numbers and a divergence said one way everywhere; users' free text made safe.

`human_number` and `divergence_text` have twins in the dashboard's api.js that follow
the same rules, so the CLI, the API's pages, the plots and the charts say the same.

Free text from users (a sweep's name): refused with hidden characters on the way in, escaped on the way out.

Hidden are Unicode's control (Cc: ESC, NUL, newline), format (Cf: the right-to-left
override U+202E, zero-width spaces) and surrogate (Cs) characters. Printed, ESC
rewrites a terminal (clears it, sets its title); U+202E shows text other than what it
is; PostgreSQL refuses NUL in a text column. Rows stored before the API refused them
may still hold some, so whatever prints text escapes it as well.
"""

from __future__ import annotations

import math
import unicodedata

__all__ = ["counted", "divergence_text", "first_hidden", "human_number", "printable"]

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def first_hidden(text: str) -> str | None:
    """The first hidden character of `text`, or None."""
    return next((character for character in text if unicodedata.category(character) in HIDDEN_CATEGORIES), None)


def printable(text: str) -> str:
    """`text` with each hidden character written as its escape (`\\x1b`, `\\u202e`), so a reader sees it is there."""
    if first_hidden(text) is None:
        return text
    return "".join(
        character.encode("unicode_escape", errors="backslashreplace").decode("ascii")
        if unicodedata.category(character) in HIDDEN_CATEGORIES else character
        for character in text
    )


def human_number(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits, as people write it: 0.547, 0.936, 0.001, 12300; below 0.001
    or from 100,000 in scientific form with a two-digit exponent: 5.47e-05, 1e+06. Never 5.473520283788641e-01."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}e{int(exponent):+03d}"
    return f"{float(f'{value:.{digits}g}'):f}".rstrip("0").rstrip(".")


def divergence_text(diverged_at: int) -> str:
    """What a run's `diverged_at` means, in the words every view uses: the epoch whose loss blew up is not stored,
    so the curve ends one epoch before it."""
    if diverged_at == 0:
        return "diverged at epoch 0: no finite loss"
    return f"loss finite through epoch {diverged_at - 1}; diverged at epoch {diverged_at}"


def counted(count: int, noun: str) -> str:
    """"1 run", "2 runs", "0 jobs": a count with its noun, singular for one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
