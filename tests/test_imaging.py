"""The keep/convert decision and the container walkers, on bytes: plain functions, table tests."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from civitai_spider.imaging import ImagePolicy, ImageRejected, iso_bmff, process_image, sniff_video
from tests.support import image_bytes

ORIGINAL = ImagePolicy()


def transparent_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("data", "policy", "ext", "kept"), [
    (image_bytes("JPEG"), ORIGINAL, "jpg", True),
    (image_bytes("JPEG", "L"), ORIGINAL, "jpg", True),
    (image_bytes("JPEG", "CMYK"), ORIGINAL, "jpg", False),
    (image_bytes("PNG"), ORIGINAL, "png", True),
    (image_bytes("PNG", "I;16"), ORIGINAL, "png", True),
    (image_bytes("WEBP"), ORIGINAL, "webp", True),
    (image_bytes("GIF", "P"), ORIGINAL, "jpg", False),
    (image_bytes("BMP"), ORIGINAL, "jpg", False),
    (image_bytes("TIFF"), ORIGINAL, "jpg", False),
    (image_bytes("AVIF"), ORIGINAL, "jpg", False),
    (transparent_png(), ImagePolicy(format="jpeg"), "jpg", False),
    (image_bytes("JPEG"), ImagePolicy(format="png"), "png", False),
    (image_bytes("PNG"), ImagePolicy(format="png"), "png", True),
])
def test_process_image(data, policy, ext, kept):
    stored = process_image(data, policy)
    assert (stored.ext, stored.kept) == (ext, kept)
    assert stored.size == len(stored.data) and len(stored.checksum) == 32
    with Image.open(io.BytesIO(stored.data)) as image:
        image.load()


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"<!DOCTYPE html><html></html>", "unidentified"),
    (image_bytes("JPEG", size=(256, 256))[:-600], "truncated"),
    (image_bytes("PNG")[:-20], "truncated"),
    (image_bytes("WEBP", size=(256, 256))[:200], "truncated"),
])
def test_process_image_refuses(data, reason):
    with pytest.raises(ImageRejected) as raised:
        process_image(data, ORIGINAL)
    assert raised.value.reason == reason


def box(kind: bytes, body: bytes = b"", size: int | None = None) -> bytes:
    return struct.pack(">I", 8 + len(body) if size is None else size) + kind + body


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    return box(b"ftyp", major + b"\0\0\0\0" + b"".join(compatible))


@pytest.mark.parametrize(("data", "expected", "video"), [
    (ftyp(b"isom", b"mp41") + box(b"moov") + box(b"mdat", bytes(8)), ("video", "isom"), "mp4"),
    (ftyp(b"iso6", b"dash") + box(b"moof") + box(b"mdat"), ("video", "iso6"), "mp4"),
    (ftyp(b"mp42") + box(b"mdat", bytes(8)) + box(b"moov"), ("video", "mp42"), "mp4"),  # moov last
    (ftyp(b"heic", b"mif1", b"heic") + box(b"meta"), ("image", "heic"), None),
    (ftyp(b"avis", b"avif", b"msf1") + box(b"meta") + box(b"moov"), ("image", "avis"), None),  # a sequence
    (ftyp(b"mif1", b"avif") + box(b"meta"), ("image", "mif1"), None),
    (ftyp(b"zzzz", b"avif") + box(b"meta"), ("image", "zzzz"), None),  # an image brand among the others
    (ftyp(b"isom") + box(b"mdat", bytes(8), size=4096), ("truncated", "isom"), None),
    (ftyp(b"zzzz") + box(b"free"), ("unknown", "zzzz"), None),
    (b"\x1a\x45\xdf\xa3" + bytes(16), None, "webm"),
    (b"\xff\xd8\xff" + bytes(16), None, None),
])
def test_iso_bmff_and_sniff_video(data, expected, video):
    assert iso_bmff(data) == expected
    assert sniff_video(data) == video
