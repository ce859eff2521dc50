"""Write two sample photographs for the README's image examples: scikit-image's `chelsea`
(a cat) as JPEG and `coffee` as PNG, into a folder (default `.infergate/samples/`,
git-ignored). Offline: the images ship inside the scikit-image package.

.venv/bin/python examples/sample_images.py [folder]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image
from skimage import data


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cat, coffee = folder / "cat.jpg", folder / "coffee.png"
    Image.fromarray(data.chelsea()).save(cat, quality=92)
    Image.fromarray(data.coffee()).save(coffee)
    return [cat, coffee]


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else ".infergate/samples")):
        print(path)
