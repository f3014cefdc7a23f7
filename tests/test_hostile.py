"""Hostile input: hundreds of odd and broken image files, and hostile API answers.

Every file is either stored and opens cleanly in Pillow, or recorded with a reason;
every hostile API item is dropped with a reason; nothing crashes, nothing is
written outside the store.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest_twisted
from PIL import Image, ImageCms

from tests.support import api_image, run_crawl, scenario

MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I", "I;16", "I;16B", "I;16L", "F"]
FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]


def save(image: Image.Image, fmt: str, **options) -> bytes | None:
    out = io.BytesIO()
    try:
        image.save(out, fmt, **options)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # Pillow cannot write this mode in this format: not a test case
    return out.getvalue()


def picture(mode: str, size=(40, 30)) -> Image.Image:
    base = Image.merge("RGB", [Image.linear_gradient("L").resize(size)] * 3)
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.linear_gradient("L").resize(size).convert("I").point(lambda v: v * 200).convert(mode) \
            if mode != "F" else Image.linear_gradient("L").resize(size).convert("F")
    try:
        return base.convert(mode)
    except ValueError:
        return Image.new(mode, size)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height over the data of a 1x1 image (valid CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00\x80")) \
        + png_chunk(b"IEND", b"")


def hostile_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for mode in MODES:  # every mode, in every format that takes it
        for fmt in FORMATS:
            data = save(picture(mode), fmt)
            if data:
                files[f"mode-{mode}-{fmt}"] = data
    for fmt in ("PNG", "GIF"):  # palettes, with and without transparency
        p = picture("RGB").quantize(16)
        files[f"palette-{fmt}"] = save(p, fmt)
        files[f"palette-transparent-{fmt}"] = save(p, fmt, transparency=0)
    frames = [Image.new("RGBA", (20, 20), (255 * (i % 2), 0, 0, 128 + i)) for i in range(4)]
    for fmt in ("GIF", "WEBP", "PNG"):  # animated
        files[f"animated-{fmt}"] = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)
    for orientation in range(1, 9):  # EXIF orientations
        exif = Image.Exif()
        exif[0x0112] = orientation
        for fmt in ("JPEG", "WEBP"):
            files[f"exif-{orientation}-{fmt}"] = save(picture("RGB", (40, 20)), fmt, exif=exif)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):  # ICC profiles
        files[f"icc-{fmt}"] = save(picture("RGB"), fmt, icc_profile=srgb)
    files["icc-broken-JPEG"] = save(picture("CMYK"), "JPEG", icc_profile=b"not a profile" * 10)
    files["zero-width-PNG"] = png_with_header(0, 10)
    files["zero-height-PNG"] = png_with_header(10, 0)
    files["near-bomb-header-PNG"] = png_with_header(10_000, 10_000)  # 1e8 px: over the limit, under 2x
    files["bomb-header-PNG"] = png_with_header(100_000, 100_000)
    files["bomb-header-GIF"] = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00;"
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"):  # truncated at many offsets
        whole = save(picture("RGB", (64, 48)), fmt)
        spread = range(1, len(whole), max(1, len(whole) // 24))
        for cut in {*spread, 2, 8, 16, 33, 64, len(whole) - 50, len(whole) - 10, len(whole) - 2, len(whole) - 1}:
            if 0 < cut < len(whole):
                files[f"cut-{fmt}-{cut}"] = whole[:cut]
    for name, data in {"html": b"<!DOCTYPE html><html><body>Cloudflare</body></html>", "json": b'{"error":1}',
                       "text": b"hello", "zeros": b"\0" * 4096, "random": bytes(range(256)) * 8,
                       "svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>', "pdf": b"%PDF-1.4\n%%EOF",
                       "empty": b"", "png-magic-only": b"\x89PNG\r\n\x1a\n", "jpeg-magic-only": b"\xff\xd8\xff"}.items():
        files[f"bytes-{name}"] = data
    return {name: data for name, data in files.items() if data is not None}


@pytest_twisted.ensureDeferred
async def test_hundreds_of_hostile_files_are_stored_cleanly_or_recorded(server, tmp_path):
    files = hostile_files()
    assert len(files) >= 250
    names = sorted(files)
    server.load(scenario([api_image(i, file=name) for i, name in enumerate(names, start=1)], files))
    store = tmp_path / "store"

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_IMAGES_IN_FLIGHT": 8})

    assert result.stats["finish_reason"] == "finished"
    assert "spider_exceptions" not in repr(result.stats) and not result.stats.get("log_count/CRITICAL")
    failed = {r["id"]: r for r in map(json.loads, (store / "failures.jsonl").read_text().splitlines())}
    stored = {}
    for path in store.iterdir():
        if path.suffix in (".jpg", ".png", ".webp", ".mp4", ".webm"):
            assert int(path.stem) not in stored, path
            stored[int(path.stem)] = path
    assert len(stored) + len(failed) == len(names)  # every file accounted for, once
    assert not set(stored) & set(failed)
    for image_id, path in stored.items():
        with Image.open(path) as image:  # opens cleanly, fully decoded
            image.load()
            assert image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "I;16B"), (names[image_id - 1], image.mode)
    for image_id, record in failed.items():
        assert record["reason"] and record["detail"] is not None, record
    reasons = {names[i - 1]: r["reason"] for i, r in failed.items()}
    assert reasons["bomb-header-PNG"] == "decompression_bomb"
    assert reasons["near-bomb-header-PNG"] == "corrupt"  # over the limit, and its data cannot fill it
    assert reasons["bytes-html"] == "unidentified" and reasons["bytes-empty"] == "empty"
    # Every cut file is refused, but for a GIF missing only its last byte or two (the
    # trailer: the pictures are whole) and BMPs (no end marker to miss).
    gif_size = len(save(picture("RGB", (64, 48)), "GIF"))
    whole_enough = {f"cut-GIF-{gif_size - 1}", f"cut-GIF-{gif_size - 2}"}
    cuts = [n for n in names if n.startswith("cut-") and not n.startswith("cut-BMP") and n not in whole_enough]
    assert [n for n in cuts if n not in reasons] == []
    for name in ("mode-RGBA-PNG", "mode-RGB-JPEG", "palette-transparent-PNG", "exif-6-JPEG", "icc-PNG"):
        assert names.index(name) + 1 in stored, name
    for name in ("mode-LAB-TIFF", "mode-F-TIFF", "mode-CMYK-TIFF", "animated-WEBP", "exif-6-WEBP", "icc-broken-JPEG"):
        assert names.index(name) + 1 in stored, (name, reasons.get(name))
    with Image.open(stored[names.index("exif-6-WEBP") + 1]) as upright:
        assert upright.size == (20, 40)  # a rotated WebP is converted, upright
    assert stored[names.index("exif-1-WEBP") + 1].suffix == ".webp"  # an unrotated still one is kept
    assert stored[names.index("animated-WEBP") + 1].suffix == ".png"  # an animated one: its first frame


@pytest_twisted.ensureDeferred
async def test_hostile_api_answers_are_dropped_with_a_reason(server, tmp_path):
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    good = dict(api_image(1, file="jpeg"))
    images = [
        good,
        {**api_image(2, file="jpeg"), "id": "not-a-number"},
        {**api_image(3, file="jpeg"), "id": -5},
        {**api_image(4, file="jpeg"), "id": 4.5},
        {**{k: v for k, v in api_image(5, file="jpeg").items() if k != "id"}, "_raw": True},
        {**api_image(6, file="jpeg"), "url": "file:///etc/passwd"},
        {**api_image(7, file="jpeg"), "url": "http://169.254.169.254/latest/meta-data/"},
        {**api_image(8, file="jpeg"), "url": "http://10.0.0.1/x.jpeg"},
        {**api_image(9, file="jpeg"), "url": "ftp://example.com/x.jpeg"},
        {**api_image(10, file="jpeg"), "url": "https://evil.example/x.jpeg"},
        {**api_image(11, file="jpeg"), "url": None},
        {**api_image(12, file="jpeg"), "url": "http://[::1]:80/x.jpeg"},
        {**api_image(13, file="jpeg"), "meta": {"prompt": "deep", "nest": deep}},
        {**api_image(14, file="jpeg"), "width": "wide", "height": 10**15, "stats": "lots", "username": {"a": 1},
         "createdAt": 12, "nsfwLevel": ["x"], "modelVersionIds": "1,2"},
        {**api_image(15, file="jpeg"), "meta": ["not", "a", "dict"]},
        "not an object",
        None,
        dict(good),  # a duplicate id
        {**api_image(16, file="jpeg"), "username": "../../etc", "id": 16},
    ]
    server.load(scenario(images, {"jpeg": _jpeg()}))
    store = tmp_path / "store"

    result = await run_crawl(server, {"IMAGES_STORE": str(store)}, require_meta="false")

    assert sorted(result.ids) == [1, 14, 15, 16]
    stats = result.stats
    assert stats["api/items/invalid/bad_id"] == 3 and stats["api/items/invalid/missing_id"] == 1
    assert stats["api/items/invalid/bad_url"] == 3
    assert stats["api/items/invalid/url_host_not_allowed"] == 4
    assert stats["api/items/invalid/meta_too_deep"] == 1
    assert stats["api/items/invalid/not_an_object"] == 2
    assert stats["api/items/duplicate"] == 1
    # Only the CDN's own URLs were fetched: nothing went to another host or scheme.
    assert len(server.requests("cdn")) == 4
    # Paths come from ids only: nothing outside the store, nothing named after the user name.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and store not in p.parents) == []
    assert not list(store.rglob("*etc*"))
    assert (store / "14.jpg").exists() and (store / "16.jpg").exists()


@pytest_twisted.ensureDeferred
async def test_a_page_nested_too_deeply_to_parse_ends_its_chain(server, tmp_path):
    too_deep = "[" * 100_000 + "]" * 100_000
    server.load(scenario([api_image(1)], faults=[
        {"server": "api", "match": {"page": 1}, "action": "status", "status": 200, "body": too_deep, "times": -1}]))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path), "RETRY_TIMES": 1})

    assert result.stats["api/chains/failed/invalid_json"] == 1
    assert result.stats["finish_reason"] == "api_unavailable"


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "JPEG")
    return out.getvalue()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def broken_apng() -> bytes:
    """An APNG whose second frame lost its fcTL chunk: every CRC right, so verify() passes, but
    the frame sequence is broken and Pillow cannot load it (like Pillow's chunk_no_fctl.png)."""
    frames = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(3)]
    whole = save(frames[0], "PNG", save_all=True, append_images=frames[1:])
    chunks = png_chunks(whole)
    fctl = [i for i, (kind, _) in enumerate(chunks) if kind == b"fcTL"]
    del chunks[fctl[1]]
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, body) for kind, body in chunks)


def box(kind: bytes, body: bytes = b"", size: int | None = None) -> bytes:
    return struct.pack(">I", 8 + len(body) if size is None else size) + kind + body


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    return box(b"ftyp", major + b"\0\0\0\0" + b"".join(compatible))


def heif() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return save(picture("RGB"), "HEIF")


def odd_containers() -> dict[str, bytes]:
    """Files whose container says little of what they are: HEIF and AVIF (ISO-BMFF, like an MP4),
    MP4s with and without their movie box, an APNG with broken frames."""
    frames = [picture("RGB"), picture("L").convert("RGB")]
    return {
        "heif": heif(),
        "avif": save(picture("RGB"), "AVIF"),
        "avif-rgba": save(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), "AVIF"),  # transparent: stays PNG
        "avif-sequence": save(frames[0], "AVIF", save_all=True, append_images=frames[1:]),
        "mp4": ftyp(b"isom", b"isom", b"mp41") + box(b"moov", box(b"mvhd", bytes(100))) + box(b"mdat", bytes(64)),
        "mp4-fragmented": ftyp(b"iso6", b"iso6", b"dash") + box(b"moof", bytes(16)) + box(b"mdat", bytes(64)),
        "mp4-cut": ftyp(b"isom", b"isom") + box(b"mdat", bytes(64), size=4096),
        "ftyp-unknown": ftyp(b"zzzz", b"zzzz") + box(b"free", bytes(32)),
        "heif-garbage": ftyp(b"heic", b"mif1", b"heic") + box(b"meta", bytes(40)),
        "apng-broken-frames": broken_apng(),
    }


@pytest_twisted.ensureDeferred
async def test_files_are_stored_as_what_they_are_or_recorded(server, tmp_path):
    from civitai_spider.imaging import iso_bmff

    files = odd_containers()
    names = sorted(files)
    server.load(scenario([api_image(i, file=name) for i, name in enumerate(names, start=1)], files))
    store = tmp_path / "store"

    await run_crawl(server, {"IMAGES_STORE": str(store)})

    stored = {names[int(p.stem) - 1]: p for p in store.iterdir() if p.suffix in (".jpg", ".png", ".webp", ".mp4")}
    failed = {names[r["id"] - 1]: r["reason"]
              for r in map(json.loads, (store / "failures.jsonl").read_text().splitlines())}
    assert {name: path.suffix for name, path in stored.items()} == {
        "heif": ".jpg", "avif": ".jpg", "avif-rgba": ".png", "avif-sequence": ".jpg", "apng-broken-frames": ".png",
        "mp4": ".mp4", "mp4-fragmented": ".mp4"}
    assert failed == {"mp4-cut": "truncated", "ftyp-unknown": "unsupported_format",
                      "heif-garbage": "unsupported_format"}
    for name, path in stored.items():
        if path.suffix == ".mp4":  # a video: a movie box, byte for byte
            assert iso_bmff(path.read_bytes())[0] == "video" and path.read_bytes() == files[name]
            continue
        with Image.open(path) as image:  # every frame of every stored image decodes
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                image.load()
    with Image.open(stored["apng-broken-frames"]) as first:
        assert not getattr(first, "is_animated", False) and first.getpixel((0, 0)) == (0, 0, 0)  # its first frame
