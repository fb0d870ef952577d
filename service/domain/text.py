"""Free text from users (a sweep's name): refused with hidden characters on the way in, escaped on the way out.

Hidden are Unicode's control (Cc: ESC, NUL, newline), format (Cf: the right-to-left
override U+202E, zero-width spaces) and surrogate (Cs) characters. Printed, ESC
rewrites a terminal (clears it, sets its title); U+202E shows text other than what it
is; PostgreSQL refuses NUL in a text column. Rows stored before the API refused them
may still hold some, so whatever prints text escapes it as well.
"""

from __future__ import annotations

import unicodedata

__all__ = ["first_hidden", "printable"]

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
