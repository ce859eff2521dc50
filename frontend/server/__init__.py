"""The HTTP server of `python -m frontend serve`: uvicorn + httptools with the limits of
`ServerSettings` (see protocol.py for what each one closes, and options.py)."""

from .options import uvicorn_options

__all__ = ["uvicorn_options"]
