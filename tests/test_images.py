"""The images pipeline: real crawls through the stand-in, with test images made by Pillow."""

from __future__ import annotations

import io
import json

import pytest
import pytest_twisted
from PIL import Image, PngImagePlugin

from civitai_spider.imaging import generation_text
from tests.support import api_image, image_bytes, run_crawl, scenario

PARAMETERS = "a cat in a hat, ünïcödé 猫\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 42"


def png_with_parameters() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", PARAMETERS)
    return image_bytes("PNG", pnginfo=info)


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def transparent(mode: str) -> Image.Image:
    """A picture whose left half is fully transparent and right half opaque red."""
    rgba = Image.new("RGBA", (16, 8), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (8, 0, 16, 8))
    if mode == "P":
        p = rgba.convert("RGB").quantize(4)
        p.info["transparency"] = p.getpixel((0, 0))
        return p
    return rgba.convert(mode)


def user_comment(text: str) -> Image.Exif:
    """EXIF with an A1111-style UserComment ("UNICODE\\0" + UTF-16BE)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    return exif


def rotated_webp() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return encoded(Image.new("RGB", (40, 20), (0, 200, 0)), "WEBP", exif=exif)


FILES = {
    "jpeg": image_bytes("JPEG", quality=80),
    "jpeg_grey": image_bytes("JPEG", "L"),
    "png_params": png_with_parameters(),
    "png_16bit": image_bytes("PNG", "I;16"),
    "rgba_png": encoded(transparent("RGBA"), "PNG"),
    "rgba_webp": encoded(transparent("RGBA"), "WEBP", lossless=True),
    "la_png": encoded(transparent("LA"), "PNG"),
    "p_gif": encoded(transparent("P"), "GIF", transparency=transparent("P").info["transparency"]),
    "cmyk_jpeg": image_bytes("JPEG", "CMYK"),
    "webp": image_bytes("WEBP"),
    "gif": image_bytes("GIF", "P"),
    "tiff16": encoded(Image.new("I;16", (8, 8), 40000), "TIFF"),
    "rotated_webp": rotated_webp(),
    "webp_params": encoded(Image.open(io.BytesIO(png_with_parameters())), "WEBP", exif=user_comment(PARAMETERS)),
    "truncated_jpeg": image_bytes("JPEG", size=(256, 256))[:-600],
    "truncated_png": png_with_parameters()[:-40],
    "truncated_webp": image_bytes("WEBP", size=(256, 256))[:200],
    "html": b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>",
    "empty": b"",
    # ftyp, an (empty) movie box, media data: what makes an ISO-BMFF file a video.
    "mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08moov" + b"\x00\x00\x00\x48mdat" + b"\x00" * 64,
}
IDS = {name: number for number, name in enumerate(FILES, start=1)}


def load_all(server, **extra):
    server.load(scenario([api_image(IDS[name], file=name) for name in FILES], FILES, **extra))


def stored(store, name):
    matches = sorted(p for p in store.iterdir() if p.stem == str(IDS[name]) and p.suffix != ".json")
    assert len(matches) <= 1, matches
    return matches[0] if matches else None


def failures(store):
    path = store / "failures.jsonl"
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}


@pytest.fixture
def store(tmp_path):
    return tmp_path / "images"


# Checked and written by store processes (the default with a local store), or in threads.
@pytest.mark.parametrize("processes", [2, 0])
@pytest_twisted.ensureDeferred
async def test_original_policy_keeps_or_converts_each_kind(server, store, processes):
    load_all(server)

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_STORE_PROCESSES": processes}, type="image")
    assert result.stats.get("store_processes/started") == (processes or None)

    # Kept byte for byte: JPEG in RGB/L, PNG in any mode (text chunks and all), a still,
    # unrotated WebP (its alpha and its EXIF UserComment with it).
    suffixes = {"jpeg": ".jpg", "jpeg_grey": ".jpg", "png_params": ".png", "png_16bit": ".png", "rgba_png": ".png",
                "la_png": ".png", "webp": ".webp", "rgba_webp": ".webp", "webp_params": ".webp"}
    for name, suffix in suffixes.items():
        path = stored(store, name)
        assert path.suffix == suffix, name
        assert path.read_bytes() == FILES[name], name
    assert generation_text(Image.open(stored(store, "png_params"))) == PARAMETERS
    assert generation_text(Image.open(stored(store, "webp_params"))) == PARAMETERS

    # Alpha kept as alpha: a transparent pixel stays transparent, never black.
    for name in ("rgba_webp", "p_gif"):
        path = stored(store, name)
        assert path.suffix == (".webp" if name == "rgba_webp" else ".png"), name
        with Image.open(path) as image:
            image = image.convert("RGBA")
            assert image.getpixel((0, 0))[3] == 0, name
            assert image.getpixel((12, 4)) == (255, 0, 0, 255), name

    # Converted to JPEG, opening cleanly.
    for name in ("cmyk_jpeg", "gif", "tiff16", "rotated_webp"):
        path = stored(store, name)
        assert path.suffix == ".jpg", name
        with Image.open(path) as image:
            image.load()
            assert image.format == "JPEG" and image.mode in ("RGB", "L"), name
    with Image.open(stored(store, "tiff16")) as image:  # 40000/65535 of white, not clipped to white
        assert 150 <= image.convert("L").getpixel((0, 0)) <= 160
    with Image.open(stored(store, "rotated_webp")) as image:
        assert image.size == (20, 40)  # upright
        assert image.getexif().get(0x0112) in (None, 1)

    # Videos by content, byte for byte.
    assert stored(store, "mp4").suffix == ".mp4"
    assert stored(store, "mp4").read_bytes() == FILES["mp4"]

    # Bad files: nothing under a final name, one failure record each, the crawl went on.
    recorded = failures(store)
    expected_failures = {"truncated_jpeg": "truncated", "truncated_png": "truncated", "html": "unidentified",
                         "empty": "empty", "truncated_webp": "truncated"}
    for name, reason in expected_failures.items():
        assert stored(store, name) is None, name
        assert recorded[IDS[name]]["reason"] == reason, (name, recorded[IDS[name]])
        assert recorded[IDS[name]]["url"].endswith(".jpeg")
        assert recorded[IDS[name]]["time"].endswith("+00:00")
        assert result.stats[f"images/failed/{reason}"] >= 1
    assert len(recorded) == len(expected_failures)
    assert sorted(result.ids) == sorted(IDS[n] for n in FILES if n not in expected_failures)
    assert [p.name for p in store.iterdir() if p.name.endswith(".part")] == []
    # The stored path is on the item, for feed exports.
    item = next(i for i in result.items if i["id"] == IDS["jpeg"])
    assert item["images"][0]["path"] == f"{IDS['jpeg']}.jpg"


@pytest.mark.parametrize("policy", ["jpeg", "png"])
@pytest_twisted.ensureDeferred
async def test_single_format_policies(server, store, policy):
    load_all(server)

    await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_IMAGE_FORMAT": policy})

    for name in ("jpeg", "png_params", "rgba_webp", "p_gif", "cmyk_jpeg", "webp", "tiff16"):
        path = stored(store, name)
        with Image.open(path) as image:
            image.load()
            assert image.format == policy.upper(), name
            assert path.suffix == (".jpg" if policy == "jpeg" else ".png")
            if policy == "jpeg" and name == "rgba_webp":
                assert image.getpixel((0, 0)) == (255, 255, 255)  # flattened onto white
            if policy == "png" and name == "rgba_webp":
                assert image.getpixel((0, 0))[3] == 0
            if name == "png_params":
                assert generation_text(image) == PARAMETERS
    # A file already in the wanted format is still kept byte for byte.
    keep = "jpeg" if policy == "jpeg" else "png_params"
    assert stored(store, keep).read_bytes() == FILES[keep]


@pytest_twisted.ensureDeferred
async def test_decompression_bombs(server, store):
    files = {"small": image_bytes("PNG", "L", (100, 100)), "near": image_bytes("PNG", "L", (150, 100)),
             "bomb": image_bytes("PNG", "L", (250, 100))}
    server.load(scenario([api_image(i, file=name) for i, name in enumerate(files, start=1)], files))

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_MAX_IMAGE_PIXELS": 10_000})

    assert sorted(result.ids) == [1, 2]
    assert (store / "2.png").read_bytes() == files["near"]  # over the limit: kept, warned
    assert result.stats["images/decompression_bomb_warning"] == 1
    assert not (store / "3.png").exists()  # over twice the limit: refused
    assert failures(store)[3]["reason"] == "decompression_bomb"


@pytest_twisted.ensureDeferred
async def test_download_over_the_size_cap_is_abandoned(server, store):
    files = {"big": encoded(Image.effect_noise((400, 400), 80), "PNG"), "ok": image_bytes("JPEG")}
    assert len(files["big"]) > 100_000
    server.load(scenario([api_image(1, file="big"), api_image(2, file="ok")], files))

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_IMAGE_MAX_BYTES": 50_000})

    assert result.ids == [2]
    assert failures(store)[1]["reason"] == "too_large"


@pytest_twisted.ensureDeferred
async def test_http_errors_and_missing_files_are_recorded(server, store):
    files = {"ok": image_bytes("JPEG")}
    server.load(scenario(
        [api_image(1, file="ok"), api_image(2), api_image(3, file="ok")],  # 2 has no file: 404
        files,
        faults=[{"server": "cdn", "match": {"image_id": 3}, "action": "status", "status": 503, "times": -1}],
    ))

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "RETRY_TIMES": 1})

    assert result.ids == [1]
    assert failures(store)[2]["reason"] == "http_404"
    assert failures(store)[3]["reason"] == "http_503"


@pytest_twisted.ensureDeferred
async def test_thumbnails_and_minimum_size_keep_working(server, store):
    files = {"big": image_bytes("JPEG", size=(200, 100)), "tiny": image_bytes("JPEG", size=(20, 10))}
    server.load(scenario([api_image(1, file="big"), api_image(2, file="tiny")], files))

    result = await run_crawl(server, {
        "IMAGES_STORE": str(store), "IMAGES_THUMBS": {"small": (50, 50)},
        "IMAGES_MIN_WIDTH": 100, "IMAGES_MIN_HEIGHT": 50,
    })

    assert result.ids == [1]
    with Image.open(store / "thumbs" / "small" / "1.jpg") as thumb:
        assert thumb.size == (50, 25)
    assert failures(store)[2]["reason"] == "too_small"


@pytest_twisted.ensureDeferred
async def test_download_cut_short_is_retried_then_recorded(server, store):
    files = {"png": encoded(Image.effect_noise((200, 200), 80), "PNG")}
    server.load(scenario([api_image(1, file="png"), api_image(2, file="png")], files, faults=[
        {"server": "cdn", "match": {"image_id": 1}, "action": "truncate", "times": 1},
        {"server": "cdn", "match": {"image_id": 2}, "action": "truncate", "times": -1},
    ]))

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "RETRY_TIMES": 2})

    assert result.ids == [1]  # cut short once, retried, stored whole
    assert (store / "1.png").read_bytes() == files["png"]
    assert failures(store)[2]["reason"] == "incomplete_download"
    assert not (store / "2.png").exists()


@pytest.mark.parametrize("fmt, save", [
    ("JPEG", {"quality": 95, "exif": Image.Exif()}),
    ("PNG", {"compress_level": 6}),
])
def test_encoding_through_a_file_gives_the_same_bytes_as_through_memory(fmt, save):
    # save_to_bytes encodes into a real file (so Pillow's JPEG encoder releases the GIL):
    # what gets stored must not change.
    from civitai_spider.imaging import save_to_bytes

    picture = Image.effect_noise((300, 200), 60).convert("RGB")
    assert save_to_bytes(picture, fmt, **save) == encoded(picture, fmt, **save)
