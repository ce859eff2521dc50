"""Where batch jobs keep their files: inputs as uploaded, results and errors per chunk.

`Storage` (base.py) is the interface the jobs code uses; `LocalStorage` (local.py) keeps
them under one directory, which workers on other hosts mount at the same path. Keys are
`/`-joined and never chosen by a client (`jobs/<job_id>/inputs/0.csv`, ...).
"""

from .base import BlobWriter, Storage, check_key
from .local import LocalStorage

__all__ = ["BlobWriter", "LocalStorage", "Storage", "check_key"]
