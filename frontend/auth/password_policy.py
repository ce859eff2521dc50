"""What a new password must be (NIST SP 800-63B style: length and a blocklist, no
composition rules). Applied wherever a password is set: user creation today, and any
later way to change one.

Judged on the NFKC normal form (so a fullwidth or ligature spelling counts like the
plain one), length in code points:

- 12 to 256 code points;
- no control characters (NUL, escapes, line breaks: they cannot be typed reliably and
  break terminals and logs), not whitespace only, at least 4 distinct characters;
- not a run of the alphabet, the digits or a keyboard row (`abcdefghijkl`, `123456789012`);
- not a common password, compared case-folded with and without its spaces, and also the
  part between its first and last letter (`password` in `Password1234!`), against the
  bundled list in common_passwords.txt (source and licence in its header);
- not the username.

The password is stored as typed (its hash); normalisation only decides what is refused."""

from __future__ import annotations

import unicodedata
from functools import cache
from importlib import resources

from ..errors import InputInvalid

MIN_CHARS = 12
MAX_CHARS = 256
MIN_DISTINCT = 4
# A core this short matches too much to mean "a common password with padding".
MIN_CORE_CHARS = 4
_RUNS = (
    "0123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "qwertyuiopasdfghjklzxcvbnm",
    "1234567890qwertyuiopasdfghjklzxcvbnm",
)


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files(__package__).joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _is_run(folded: str) -> bool:
    for run in _RUNS:
        for sequence in (run, run[::-1]):
            if folded in sequence * (len(folded) // len(sequence) + 2):
                return True
    return False


def _core(text: str) -> str:
    """From the first letter to the last: what is left of `!!Password1234` once the
    digits and symbols padding it are cut."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    return text[letters[0] : letters[-1] + 1] if letters else ""


def weakness(password: str, username: str | None = None) -> str | None:
    """Why this password is refused, or None. Never echoes the password."""
    normal = unicodedata.normalize("NFKC", password)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in normal):
        return "it contains control characters"
    if not normal.strip():
        return "it is only whitespace"
    if len(normal) < MIN_CHARS:
        return f"it is shorter than {MIN_CHARS} characters"
    if len(normal) > MAX_CHARS:
        return f"it is longer than {MAX_CHARS} characters"
    if len(set(normal)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} distinct characters"
    folded = normal.casefold().strip()
    compact = "".join(folded.split())
    if _is_run(compact):
        return "it is a run of the alphabet, the digits or a keyboard row"
    core = _core(compact)
    candidates = {folded, compact} | ({core} if len(core) >= MIN_CORE_CHARS else set())
    if candidates & common_passwords():
        return "it is a commonly used password"
    if username and unicodedata.normalize("NFKC", username).casefold() in (compact, core):
        return "it is the username"
    return None


def check_new_password(password: str, username: str | None = None) -> None:
    reason = weakness(password, username)
    if reason is not None:
        raise InputInvalid(f"password refused: {reason}", {"reason": reason})
