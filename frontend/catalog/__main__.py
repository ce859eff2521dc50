"""`python -m frontend.catalog [PATH]`: write the model card's JSON Schema (default: stdout).

The committed copy is docs/model-card.schema.json; a unit test fails when it is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .card import json_schema


def main(argv: list[str]) -> None:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
