"""Resizing at export time, as img2dataset does it (the store itself stays lossless).

Modes (img2dataset's names and meaning):

- ``keep_ratio``: the smaller side becomes ``size``, the ratio kept;
- ``center_crop``: the same, then the centre ``size`` x ``size`` square;
- ``border``: the larger side becomes ``size``, then white borders make it a
  ``size`` x ``size`` square.

Lanczos resampling; ``only_if_bigger`` leaves images already small enough as
they are (img2dataset's ``resize_only_if_bigger``). The format stays: a JPEG
is re-encoded as JPEG (``quality``, EXIF orientation applied first), a PNG as
PNG (alpha kept), a WebP as WebP; the generation text a PNG carries
(``parameters``) is kept. An image left as it is keeps its bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, PngImagePlugin

MODES = ("keep_ratio", "center_crop", "border")
RESIZABLE = frozenset({"jpg", "jpeg", "png", "webp"})  # what a store holds as images; others pass as they are
BORDER = (255, 255, 255)


@dataclass(frozen=True)
class Resize:
    size: int
    mode: str = "keep_ratio"
    only_if_bigger: bool = False
    quality: int = 95


def target_size(width: int, height: int, resize: Resize) -> tuple[int, int]:
    """The size the image is scaled to before any crop or border."""
    side = min(width, height) if resize.mode in ("keep_ratio", "center_crop") else max(width, height)
    scale = resize.size / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_image(data: bytes, ext: str, resize: Resize) -> tuple[bytes, int, int]:
    """``data`` resized as ``resize`` says; (bytes, width, height)."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened) if opened.format == "JPEG" else opened.copy()
    width, height = image.size
    scaled = target_size(width, height, resize)
    if resize.only_if_bigger and scaled[0] >= width:
        return data, width, height  # not bigger than asked: as it is
    if scaled == (width, height) and (resize.mode == "keep_ratio" or scaled == (resize.size, resize.size)):
        return data, width, height  # already the asked size
    image = image.resize(scaled, Image.Resampling.LANCZOS) if scaled != (width, height) else image
    if resize.mode == "center_crop":
        left, top = (image.width - resize.size) // 2, (image.height - resize.size) // 2
        image = image.crop((left, top, left + resize.size, top + resize.size))
    elif resize.mode == "border":
        image = _with_border(image, resize.size)
    return _encode(image, ext, resize), image.width, image.height


def _with_border(image: Image.Image, size: int) -> Image.Image:
    alpha = "A" in image.mode or "transparency" in image.info
    mode = "RGBA" if alpha else "L" if image.mode in ("1", "L") else "RGB"
    image = image.convert(mode)
    fill = (*BORDER, 255) if mode == "RGBA" else BORDER[0] if mode == "L" else BORDER
    canvas = Image.new(mode, (size, size), fill)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    canvas.info = image.info
    return canvas


def _encode(image: Image.Image, ext: str, resize: Resize) -> bytes:
    out = io.BytesIO()
    info = image.info
    if ext in ("jpg", "jpeg"):
        # The EXIF (A1111's UserComment) goes along, its orientation already applied.
        image.convert("RGB" if image.mode not in ("RGB", "L") else image.mode).save(
            out, "JPEG", quality=resize.quality, exif=info.get("exif") or b"")
    elif ext == "png":
        text = PngImagePlugin.PngInfo()
        for key, value in info.items():
            if key in ("parameters", "prompt", "workflow", "Comment") and isinstance(value, str):
                text.add_text(key, value)
        image.save(out, "PNG", pnginfo=text)
    elif ext == "webp":
        image.save(out, "WEBP", quality=resize.quality, exif=info.get("exif") or b"")
    else:
        raise ValueError(f"cannot re-encode .{ext}")
    return out.getvalue()
