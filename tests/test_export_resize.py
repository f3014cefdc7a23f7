"""Resizing at export time (``civitai_spider.export.resize``): img2dataset's modes, the format and
the generation text kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from civitai_spider.export.resize import Resize, resize_image, target_size
from tests.support import image_bytes


@pytest.mark.parametrize(("size", "mode", "width", "height", "scaled"), [
    (32, "keep_ratio", 64, 48, (43, 32)),  # the smaller side becomes 32
    (32, "keep_ratio", 48, 64, (32, 43)),
    (32, "center_crop", 80, 40, (64, 32)),  # then cropped to 32 x 32
    (32, "border", 80, 40, (32, 16)),  # the larger side becomes 32, then bordered
    (100, "keep_ratio", 64, 48, (133, 100)),  # upscaled unless only_if_bigger
    (1, "border", 1000, 3, (1, 1)),  # never a zero side
])
def test_target_size(size, mode, width, height, scaled):
    assert target_size(width, height, Resize(size, mode)) == scaled


def open_(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_modes_keep_the_format_and_give_the_asked_size():
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")):
        source = image_bytes(fmt, size=(80, 40))
        for mode, size in (("keep_ratio", (64, 32)), ("center_crop", (32, 32)), ("border", (32, 32))):
            data, width, height = resize_image(source, ext, Resize(32, mode))
            image = open_(data)
            assert image.format == fmt and image.size == (width, height) == size, (fmt, mode)
        bordered = open_(resize_image(source, ext, Resize(32, "border"))[0]).convert("RGB")
        assert bordered.getpixel((0, 0)) == (255, 255, 255) and bordered.getpixel((16, 16)) != (255, 255, 255)


def test_only_if_bigger_and_the_asked_size_keep_the_bytes():
    source = image_bytes("PNG", size=(64, 48))
    assert resize_image(source, "png", Resize(100, only_if_bigger=True)) == (source, 64, 48)
    assert resize_image(source, "png", Resize(48)) == (source, 64, 48)  # its smaller side is 48 already
    assert resize_image(source, "png", Resize(32, only_if_bigger=True))[1:] == (43, 32)


def test_generation_text_and_transparency_survive():
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "a cat\nSteps: 30, Sampler: Euler a")
    text.add_text("private", "not kept")
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(out, "PNG", pnginfo=text)
    image = open_(resize_image(out.getvalue(), "png", Resize(32, "border"))[0])
    assert image.info["parameters"] == "a cat\nSteps: 30, Sampler: Euler a" and "private" not in image.info
    assert image.mode == "RGBA" and image.getpixel((16, 16))[3] == 0


def test_a_jpeg_is_turned_upright_by_its_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 48 x 64
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 128, 255)).save(out, "JPEG", exif=exif)
    data, width, height = resize_image(out.getvalue(), "jpg", Resize(24))
    image = open_(data)
    assert (width, height) == image.size == (24, 32)
    assert image.getexif().get(0x0112, 1) == 1  # not turned twice by a viewer
