"""The one error type of the chat runtime, shared by its modules (one class per process:
every module imports it from here, as a package member or flat beside model.py)."""

from __future__ import annotations


class GenerationError(Exception):
    """Refused or failed; `code` is one of invalid | overloaded | internal."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
