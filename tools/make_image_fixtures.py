#!/usr/bin/env python3
"""Writes the small, deterministic trainset used by `worker/tests/prepare.rs`.

    python3 -m venv /tmp/venv-fixtures && /tmp/venv-fixtures/bin/pip install pillow
    /tmp/venv-fixtures/bin/python tools/make_image_fixtures.py

The output goes to `worker/tests/fixtures/trainset_mixed/images/` (replaced on each
run) and is committed; re-run this only to change the fixtures, and update the
expected numbers in the tests with it. Every image is 40x24 (not square, so the
centre crop matters) and its content is computed, never random.

What the folder holds, and what `prepare` must make of it:

    broken.png        PNG signature, then garbage            -> rejected
    cmyk.jpg          CMYK JPEG, solid red (C0 M255 Y255 K0)  -> RGB ~(255, 0, 0)
    gray.jpg          8-bit grayscale JPEG (mode L)
    gray16.png        16-bit grayscale PNG (mode I;16): top half 0x4000, bottom 0xC000
    leaves.webp       lossless WebP
    mislabeled.jpg    a PNG file with a .jpg name (format comes from the content)
    more/tile.bmp     BMP in a sub-folder (the walk is recursive)
    more/tile.tiff    TIFF of other content
    notes.md          not an image                            -> ignored
    orphan.txt        caption without an image                -> ignored
    palette.gif       palette GIF
    photo.png         RGB PNG, with caption photo.txt
    photo_copy.png    byte-for-byte copy of photo.png         -> duplicate (file hash)
    rgba.png          RGBA: left half transparent red, right half opaque blue
                      -> left white (alpha composited over white), right blue
    rotated.jpg       stored 40x24, left red / right blue, EXIF orientation 6
                      -> shown 24x40, top red / bottom blue
    scene.png         RGB PNG
    scene.webp        scene.png's pixels as lossless WebP     -> duplicate (pixel hash)
"""

import shutil
from pathlib import Path

from PIL import Image

W, H = 40, 24
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "worker" / "tests" / "fixtures" / "trainset_mixed" / "images"


def pattern(seed: int) -> Image.Image:
    """An RGB picture of smooth gradients plus a seed-dependent checker."""
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        for x in range(W):
            checker = 60 if ((x // 4 + y // 4 + seed) % 2) else 0
            px[x, y] = (
                (x * 6 + seed * 37) % 196 + checker,
                (y * 10 + seed * 53) % 196 + checker,
                ((x + y) * 4 + seed * 71) % 196 + checker,
            )
    return img


def main() -> None:
    if OUT.parent.exists():
        shutil.rmtree(OUT.parent)
    (OUT / "more").mkdir(parents=True)

    # RGB PNG with a caption (surrounding whitespace must be trimmed), and a byte copy.
    pattern(1).save(OUT / "photo.png")
    (OUT / "photo.txt").write_text("  a photo of a checkered gradient\n\n")
    shutil.copyfile(OUT / "photo.png", OUT / "photo_copy.png")

    # RGBA: left half fully transparent red (dropping alpha would give red),
    # right half opaque blue.
    rgba = Image.new("RGBA", (W, H), (0, 0, 255, 255))
    rgba.paste((255, 0, 0, 0), (0, 0, W // 2, H))
    rgba.save(OUT / "rgba.png")

    # 16-bit grayscale: values that 8-bit would write as 64 and 191.
    g16 = Image.new("I;16", (W, H), 0x4000)
    # (Pasting a plain int into I;16 writes 0; paste an image of the value.)
    g16.paste(Image.new("I;16", (W, H - H // 2), 0xC000), (0, H // 2))
    g16.save(OUT / "gray16.png")
    check = Image.open(OUT / "gray16.png")
    assert check.mode == "I;16"
    assert (check.getpixel((0, 0)), check.getpixel((0, H - 1))) == (0x4000, 0xC000)

    # 8-bit grayscale JPEG.
    pattern(2).convert("L").save(OUT / "gray.jpg", quality=90)

    # CMYK JPEG of one solid colour: pure red in CMYK terms.
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(
        OUT / "cmyk.jpg", quality=95, subsampling=0
    )
    assert Image.open(OUT / "cmyk.jpg").mode == "CMYK"

    # Lossless WebP of its own content.
    pattern(3).save(OUT / "leaves.webp", lossless=True)

    # Palette GIF.
    pattern(4).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(
        OUT / "palette.gif"
    )

    # The same pixels twice: PNG and lossless WebP.
    scene = pattern(5)
    scene.save(OUT / "scene.png")
    scene.save(OUT / "scene.webp", lossless=True)

    # EXIF orientation 6 (turn 90 degrees clockwise to show): stored left becomes top.
    rotated = Image.new("RGB", (W, H), (0, 0, 255))
    rotated.paste((255, 0, 0), (0, 0, W // 2, H))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(OUT / "rotated.jpg", quality=95, subsampling=0, exif=exif)

    # Content says PNG, name says JPEG.
    pattern(6).save(OUT / "mislabeled.jpg", format="PNG")

    # Sub-folder: BMP and TIFF.
    pattern(7).save(OUT / "more" / "tile.bmp")
    pattern(8).save(OUT / "more" / "tile.tiff")

    # A valid PNG signature followed by truncated garbage.
    (OUT / "broken.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + bytes((i * 7 + 3) % 256 for i in range(64))
    )

    # Files that are not images.
    (OUT / "notes.md").write_text("# trainset_mixed\n\nFixtures for `prepare`.\n")
    (OUT / "orphan.txt").write_text("a caption without an image\n")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT.relative_to(ROOT)} ({total} bytes)")


if __name__ == "__main__":
    main()
