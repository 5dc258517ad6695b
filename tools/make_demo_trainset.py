"""Draws the small bundled demo trainset (trainsets/demo/images): procedurally made
pictures in three distinct styles, so the quick start needs no downloads.

    python3 -m venv /tmp/venv-fixtures && /tmp/venv-fixtures/bin/pip install pillow
    /tmp/venv-fixtures/bin/python tools/make_demo_trainset.py
"""
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "trainsets" / "demo" / "images"
SIZE = 96


def stripes(rng):  # "<stripes-style>": bold diagonal bands
    img = Image.new("RGB", (SIZE, SIZE))
    d = ImageDraw.Draw(img)
    base = [rng.randrange(256) for _ in range(3)]
    for k in range(-SIZE, 2 * SIZE, 12):
        c = tuple((b + k * 3) % 256 for b in base)
        d.polygon([(k, 0), (k + 6, 0), (k + 6 - SIZE, SIZE), (k - SIZE, SIZE)], fill=c)
    return img


def dots(rng):  # "<dots-style>": pointillist dots on pale ground
    img = Image.new("RGB", (SIZE, SIZE), (245, 240, 225))
    d = ImageDraw.Draw(img)
    for _ in range(160):
        x, y, r = rng.randrange(SIZE), rng.randrange(SIZE), rng.randrange(2, 6)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(rng.randrange(256), rng.randrange(120), rng.randrange(256)))
    return img


def waves(rng):  # "<waves-style>": smooth interference gradients
    img = Image.new("RGB", (SIZE, SIZE))
    px = img.load()
    f1, f2, ph = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0, 6.28)
    for y in range(SIZE):
        for x in range(SIZE):
            v = math.sin(x * f1 + ph) + math.sin(y * f2 - ph)
            px[x, y] = (int(60 + 40 * v), int(120 + 60 * v), int(200 - 30 * v))
    return img


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1365)
    for style, draw in [("stripes", stripes), ("dots", dots), ("waves", waves)]:
        for i in range(4):
            path = OUT / f"{style}-{i}.png"
            draw(rng).save(path, optimize=True)
            path.with_suffix(".txt").write_text(f"a picture in the style of <{style}-style>\n")
    print(f"wrote {len(list(OUT.glob('*.png')))} images to {OUT}")


if __name__ == "__main__":
    main()
