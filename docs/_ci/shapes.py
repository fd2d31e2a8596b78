"""Stand-in for "your own folder of images" when CI runs the docs: circles, squares, triangles.

``python shapes.py FOLDER [PER_CLASS]`` writes FOLDER/<shape>/<i>.png: one filled shape per
image at a random place, size and colour on a random dark background, 32x32 RGB.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def write_shapes(folder: Path, per_class: int = 40, seed: int = 0) -> None:
    """Write ``per_class`` images of each shape into ``folder``."""
    rng = np.random.default_rng(seed)
    for shape in ("circle", "square", "triangle"):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            background = tuple(int(c) for c in rng.integers(0, 90, 3))
            colour = tuple(int(c) for c in rng.integers(140, 256, 3))
            image = Image.new("RGB", (32, 32), background)
            r = int(rng.integers(6, 13))
            x, y = (int(v) for v in rng.integers(r, 32 - r, 2))
            draw = ImageDraw.Draw(image)
            if shape == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
            elif shape == "square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
            image.save(folder / shape / f"{i:03d}.png")


if __name__ == "__main__":
    write_shapes(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40)
