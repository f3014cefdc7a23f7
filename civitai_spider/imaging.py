"""Image bytes -> bytes to store: keep losslessly when possible, convert when needed.

Plain functions, no Scrapy; ``process_image`` is meant to run in a worker thread
(Pillow releases the GIL while it decodes and encodes, so threads use every core).

Policy ``original`` (default):
- JPEG in RGB or L, PNG in any mode, and a still WebP shown as stored (no EXIF
  rotation) are stored byte for byte: re-encoding them would only lose quality.
  They are checked, not decoded: a JPEG must parse and end with its EOI marker (a
  JPEG with bytes after it is decoded at 1/8 scale to tell trailing junk from a
  cut); a PNG must pass ``verify()`` (every chunk's CRC, up to IEND) and hold
  enough IDAT data for its declared size; a WebP's RIFF chunks must all be there,
  with a picture (VP8/VP8L) among them. libjpeg only warns on corrupt entropy
  data, and inflating a PNG or decoding a WebP costs as much as converting it, so
  none of that is done.
- Everything else (animated or rotated WebP, AVIF, GIF, BMP, TIFF, MPO, CMYK/YCCK JPEG, ...) is decoded
  and re-encoded: with alpha (RGBA, LA, PA, P or L/RGB with a transparency key) to
  PNG keeping the alpha; without, to RGB/L JPEG. EXIF orientation is applied.
  Animated images keep their first frame.
Policies ``jpeg`` / ``png``: one format for everything (``jpeg`` flattens alpha onto
white); a file already in that format and mode is still kept byte for byte.

Generation data survives conversion: a PNG ``parameters`` text (A1111) goes into
the PNG again, or into EXIF UserComment ("UNICODE\\0" + UTF-16BE, as A1111 writes
it) of a JPEG. Videos (MP4, WebM) are stored byte for byte, without Pillow. An
ISO-BMFF file (``ftyp``) is a video only with a movie box (``moov``/``moof``); one
with an image brand (HEIF ``heic``/``mif1``..., AVIF ``avif``/``avis``) is an
image, converted as above: AVIF by Pillow itself, HEIF through pillow-heif when it
is installed; what cannot be told or decoded is ``unsupported_format``.

An animated PNG is kept as served only when its frames decode (checked up to
twice ``max_pixels`` of frames); one with broken frame chunks keeps its first frame.

Decompression bombs are checked here on the header's size, before any decode:
over ``max_pixels`` the image is kept with a warning, over twice that it is
refused. (Pillow's own process-wide check is switched off by the images pipeline
so that this one, with the configured limit, is the one that applies.)
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
UNICODE_PREFIX = b"UNICODE\x00"
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "mp4": "video/mp4", "webm": "video/webm"}
KEPT_EXTS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # formats stored as served, and their file names


class ImageRejected(Exception):
    """Bytes that will not be stored; ``reason`` is a short stat-friendly word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImagePolicy:
    format: str = "original"  # "original", "jpeg" or "png"
    jpeg_quality: int = 95
    max_pixels: int | None = 89_478_485  # Pillow's default limit; None: no check
    min_width: int = 0
    min_height: int = 0
    thumbs: tuple[tuple[str, tuple[int, int]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSON (a store process gets its policy so)."""
        return {**asdict(self), "thumbs": [[name, list(size)] for name, size in self.thumbs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImagePolicy:
        return cls(**{**data, "thumbs": tuple((name, (int(size[0]), int(size[1]))) for name, size in data["thumbs"])})


@dataclass
class StoredImage:
    data: bytes
    ext: str
    width: int = 0
    height: int = 0
    kept: bool = True  # stored byte for byte
    source_format: str = ""
    checksum: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. "decompression_bomb_warning"
    thumbs: dict[str, bytes] = field(default_factory=dict)
    size: int = 0  # bytes of ``data`` (kept when ``data`` is dropped after writing it)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.ext]

    def summary(self) -> dict[str, Any]:
        """What was stored, without its bytes: a plain dict for JSON (a store process answers so)."""
        return {k: v for k, v in asdict(self).items() if k not in ("data", "thumbs")}

    @classmethod
    def from_summary(cls, data: dict[str, Any]) -> StoredImage:
        return cls(data=b"", **data)


#: ISO-BMFF brands of still images and image sequences (HEIF, AVIF, MIAF): never stored as .mp4.
IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"mif2", b"msf1", b"miaf",
                b"avif", b"avis", b"avio"}


def iso_bmff(data: bytes) -> tuple[str, str] | None:
    """For an ISO-BMFF file (``ftyp`` first): ("video" | "image" | "unknown" | "truncated", major brand).

    Walks the top-level box headers only: an image major brand makes an image (an
    image sequence has a movie box too); else a movie box (``moov``, or ``moof`` when
    fragmented) makes a video; else an image among the compatible brands makes an
    image; a box running past the end makes a file cut short.
    """
    if data[4:8] != b"ftyp":
        return None
    major = data[8:12]
    brands = {major} | {data[i:i + 4] for i in range(16, min(int.from_bytes(data[:4], "big"), len(data)) - 3, 4)}
    boxes, pos, cut = set(), 0, False
    while pos + 8 <= len(data) and len(boxes) < 64:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if size == 1 and pos + 16 <= len(data):  # a 64-bit size follows
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        elif size == 0:  # to the end of the file
            size = len(data) - pos
        boxes.add(kind)
        if size < 8 or pos + size > len(data):
            cut = size >= 8
            break
        pos += size
    brand = major.decode("latin-1").strip() or "?"
    if major in IMAGE_BRANDS:  # image sequences (avis, msf1) carry a movie box too
        return "image", brand
    if boxes & {b"moov", b"moof"}:
        return "video", brand
    if brands & IMAGE_BRANDS:
        return "image", brand
    return ("truncated" if cut else "unknown"), brand


def sniff_video(data: bytes) -> str | None:
    """The video container of these bytes ("mp4", "webm"), or None."""
    found = iso_bmff(data)
    if found is not None:
        return "mp4" if found[0] == "video" else None
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def _heif_plugin() -> bool:
    """Register pillow-heif's HEIF opener with Pillow, if it is installed (idempotent)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def generation_text(image: Image.Image) -> str | None:
    """The A1111-style ``parameters`` text of an image: PNG text chunk or EXIF UserComment."""
    text = image.info.get("parameters")
    if isinstance(text, str) and text:
        return text
    try:
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # broken EXIF must not lose the image
        return None
    if isinstance(comment, bytes):
        if comment.startswith(UNICODE_PREFIX):
            return comment[len(UNICODE_PREFIX):].decode("utf-16-be", "replace") or None
        if comment.startswith(b"ASCII\x00\x00\x00"):
            return comment[8:].decode("ascii", "replace") or None
    if isinstance(comment, str) and comment:
        return comment
    return None


def _check_bomb(image: Image.Image, policy: ImagePolicy, notes: list[str]) -> None:
    if policy.max_pixels is None:
        return
    pixels = image.width * image.height
    if pixels > 2 * policy.max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"{image.width}x{image.height} = {pixels} pixels > 2 x {policy.max_pixels}",
        )
    if pixels > policy.max_pixels:
        notes.append("decompression_bomb_warning")


def _damage(exc: BaseException) -> str:
    """``truncated`` when the bytes stop short, ``corrupt`` for any other damage."""
    return "truncated" if "truncat" in str(exc).lower() else "corrupt"


def _jpeg_ends_cleanly(data: bytes) -> bool:
    """The JPEG ends with its end-of-image marker (trailing NUL or whitespace padding allowed)."""
    return data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def _jpeg_decodes(image: Image.Image) -> None:
    """Decode at 1/8 scale (cheap DCT scaling): raises on a JPEG cut short."""
    image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()


ZLIB_MAX_RATIO = 1032  # deflate cannot expand more than this
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and its (constant) CRC


def _png_plausible(image: Image.Image, data: bytes) -> bool:
    """The IDAT chunks hold enough bytes for the pixels the header declares (a crafted
    bomb header on tiny data is not); walks chunk headers only, decompresses nothing."""
    idat = 0
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += length
        pos += 12 + length
    least_raw = image.height * (1 + (image.width + 7) // 8)  # one bit a pixel, one filter byte a row
    return least_raw <= ZLIB_MAX_RATIO * max(idat, 1)


def _webp_intact(data: bytes) -> None:
    """Walk the RIFF chunk headers (decoding nothing): every chunk whole, a picture among them."""
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared > len(data):
        raise ImageRejected("truncated", f"WebP cut short: {len(data)} of {declared} bytes")
    chunks = set()
    pos = 12
    while pos + 8 <= declared:
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        chunks.add(data[pos:pos + 4])
        pos += 8 + length + (length & 1)
    if pos > declared + 1:  # the last chunk runs past the RIFF (its pad byte may be missing)
        raise ImageRejected("truncated", "WebP with its last chunk cut short")
    if not chunks & {b"VP8 ", b"VP8L", b"ANMF"}:  # (an animation's frames hold theirs)
        raise ImageRejected("corrupt", "WebP without a picture chunk (VP8, VP8L or ANMF)")


def _shown_as_stored(image: Image.Image) -> bool:
    """A still picture with no EXIF rotation to apply."""
    if getattr(image, "is_animated", False):
        return False
    try:
        return image.getexif().get(0x0112, 1) == 1
    except Exception:  # a broken EXIF block: convert, which drops it
        return False


def _frames_decode(data: bytes, policy: ImagePolicy) -> bool:
    """Every frame of an animated PNG decodes, up to twice ``max_pixels`` of frames (the
    rest unchecked); False if one does not (Pillow's ``verify()`` passes broken frame chunks)."""
    budget = 2 * policy.max_pixels if policy.max_pixels else None
    try:
        with Image.open(io.BytesIO(data)) as image:
            for frame in range(image.n_frames):
                if budget is not None:
                    budget -= image.width * image.height
                    if budget < 0:
                        break
                image.seek(frame)
                image.load()
    except Exception:  # decoders raise many types on damaged files
        return False
    return True


def _keep_as_served(image: Image.Image, data: bytes, policy: ImagePolicy, notes: list[str]) -> bool:
    fmt = image.format
    if fmt == "JPEG" and image.mode in ("RGB", "L"):
        wanted = policy.format in ("original", "jpeg")
    elif fmt == "PNG":
        wanted = policy.format in ("original", "png")
    elif fmt == "WEBP":
        wanted = policy.format == "original" and _shown_as_stored(image)
    else:
        return False
    if not wanted:
        return False
    if fmt == "WEBP":
        return True  # _webp_intact() passed before it was opened
    if fmt == "PNG" and getattr(image, "is_animated", False) and not _frames_decode(data, policy):
        notes.append("broken_animation")
        return False  # converted: its first frame, as a still PNG
    try:
        if fmt == "JPEG":
            if not _jpeg_ends_cleanly(data):  # trailing junk, or cut short: decoding tells which
                _jpeg_decodes(image)
        else:
            image.verify()
    except Exception as exc:  # decoders raise many types on damaged files
        raise ImageRejected(_damage(exc), f"{exc.__class__.__name__}: {exc}") from None
    if fmt == "PNG" and PNG_END not in data[-64:]:
        raise ImageRejected("truncated", "PNG without its complete IEND chunk")
    if fmt == "PNG" and not _png_plausible(image, data):
        raise ImageRejected("corrupt", f"{image.width}x{image.height} declared, far more than its data can hold")
    return True


def _to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth grey (I;16, I, F) scaled to L, not clipped."""
    if image.mode.startswith("I;16"):
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("I", "F"):
        low, high = image.getextrema()
        span = (high - low) or 1
        return image.point(lambda v: (v - low) * (255 / span)).convert("L")
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "CMYK" and image.info.get("icc_profile"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: plain conversion below
    return _to_8bit(image).convert("RGB")


def _flatten(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scratch_file() -> io.BufferedRandom:
    """An anonymous read-write file: in memory (``memfd``) where the OS has that, else a temporary file."""
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("civitai-encode", os.MFD_CLOEXEC), "w+b")  # noqa: SIM115 (caller closes)
    return tempfile.TemporaryFile()  # type: ignore[return-value]  # noqa: SIM115


def save_to_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """``image.save(..., fmt, **options)``, returned as bytes.

    Encoded into a real file, not a ``BytesIO``: given a file object without a file
    descriptor, Pillow's JPEG encoder holds the GIL for the whole encode (measured:
    the reactor thread stalls for the duration); given a file descriptor it encodes
    with the GIL released, like its decoders.
    """
    with _scratch_file() as out:
        image.save(out, fmt, **options)
        out.seek(0)
        return out.read()


def _encode(
    image: Image.Image,
    target: str,
    policy: ImagePolicy,
    parameters: str | None,
    exif: Image.Exif | None,
    icc: bytes | None,
) -> bytes:
    if target == "png":
        pnginfo = PngImagePlugin.PngInfo()
        if parameters:
            pnginfo.add_itxt("parameters", parameters)
        options: dict[str, Any] = {"pnginfo": pnginfo, "compress_level": 6}
        if icc:
            options["icc_profile"] = icc
        if exif is not None and len(exif):
            options["exif"] = exif
        return save_to_bytes(image, "PNG", **options)
    exif = exif if exif is not None else Image.Exif()
    if parameters:
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = UNICODE_PREFIX + parameters.encode("utf-16-be")
    options = {"quality": policy.jpeg_quality, "exif": exif}
    if icc:
        options["icc_profile"] = icc
    return save_to_bytes(image, "JPEG", **options)


def _convert(image: Image.Image, policy: ImagePolicy, notes: list[str]) -> tuple[bytes, str, Image.Image]:
    lossless_source = image.format == "PNG"  # (an APNG's first frame): stays PNG under "original"
    if getattr(image, "is_animated", False):
        notes.append("animated_first_frame")
        image.seek(0)
    parameters = generation_text(image)
    source_mode = image.mode
    icc = image.info.get("icc_profile")
    image.load()
    image = ImageOps.exif_transpose(image)  # upright; drops the Orientation tag
    try:
        exif: Image.Exif | None = image.getexif()
    except Exception:
        exif = None
    if exif is not None:
        exif.pop(0x0112, None)  # Orientation, already applied

    alpha = _has_alpha(image)
    target = policy.format if policy.format in ("jpeg", "png") else ("png" if alpha or lossless_source else "jpeg")
    if target == "png":
        if alpha:
            keep = image.mode if image.mode in ("RGBA", "LA") else "RGBA"
            image = image.convert(keep)
        elif image.mode not in ("1", "L", "RGB", "I;16", "P"):
            image = _to_rgb(image)
    else:
        image = _flatten(image) if alpha else (image if image.mode in ("L", "RGB") else _to_rgb(image))
    # An ICC profile describes the source's colour space: only keep it when that did not change.
    if source_mode in ("CMYK", "YCbCr", "LAB", "HSV") or (icc and image.mode not in ("RGB", "RGBA", "L", "LA")):
        icc = None
    ext = "png" if target == "png" else "jpg"
    return _encode(image, target, policy, parameters, exif, icc), ext, image


def _thumbnails(image: Image.Image, policy: ImagePolicy) -> dict[str, bytes]:
    thumbs = {}
    for name, size in policy.thumbs:
        thumb = image.copy()
        thumb.thumbnail(size, Image.Resampling.LANCZOS)
        thumb = _flatten(thumb) if _has_alpha(thumb) else _to_rgb(thumb)
        thumbs[name] = save_to_bytes(thumb, "JPEG", quality=policy.jpeg_quality)
    return thumbs


def process_image(data: bytes, policy: ImagePolicy) -> StoredImage:
    """Decide what to store for these downloaded bytes; raises ``ImageRejected``."""
    if not data:
        raise ImageRejected("empty", "no bytes")
    video = sniff_video(data)
    if video:
        return StoredImage(data=data, ext=video, source_format=video.upper(), checksum=hashlib.md5(data).hexdigest(),
                           size=len(data))
    container = iso_bmff(data)
    if container is not None:
        kind, brand = container
        if kind == "truncated":
            raise ImageRejected("truncated", f"ISO-BMFF file (brand {brand!r}) cut short")
        if kind == "unknown":
            raise ImageRejected("unsupported_format", f"ISO-BMFF file (brand {brand!r}) with no movie box and no image brand")
        _heif_plugin()
    notes: list[str] = []
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # libwebp calls a cut WebP "not an image": say why
        _webp_intact(data)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if container is not None:
            need = "" if _heif_plugin() else " (HEIF needs pillow-heif, which is not installed)"
            raise ImageRejected("unsupported_format", f"{container[1]!r} image Pillow cannot decode here{need}") from None
        raise ImageRejected("unidentified", f"not an image; starts {data[:32]!r}") from None
    except Image.DecompressionBombError as exc:  # Pillow's own check, if it is on
        raise ImageRejected("decompression_bomb", str(exc)) from None
    except Exception as exc:
        raise ImageRejected(_damage(exc), f"{exc.__class__.__name__}: {exc}") from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageRejected("corrupt", f"size {width}x{height}")
        _check_bomb(image, policy, notes)
        if width < policy.min_width or height < policy.min_height:
            raise ImageRejected("too_small", f"{width}x{height} < {policy.min_width}x{policy.min_height}")
        source_format = image.format or ""
        try:
            if _keep_as_served(image, data, policy, notes):
                stored = StoredImage(data=data, ext=KEPT_EXTS[source_format],
                                     width=width, height=height, source_format=source_format, notes=notes)
                if policy.thumbs:
                    with Image.open(io.BytesIO(data)) as fresh:
                        fresh.load()
                        stored.thumbs = _thumbnails(ImageOps.exif_transpose(fresh), policy)
            else:
                encoded, ext, converted = _convert(image, policy, notes)
                stored = StoredImage(data=encoded, ext=ext, width=converted.width, height=converted.height,
                                     kept=False, source_format=source_format, notes=notes)
                if policy.thumbs:
                    stored.thumbs = _thumbnails(converted, policy)
        except ImageRejected:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageRejected("decompression_bomb", str(exc)) from None
        except Exception as exc:  # any decoder failure on damaged or hostile bytes
            raise ImageRejected(_damage(exc), f"{exc.__class__.__name__}: {exc}") from None
    stored.checksum = hashlib.md5(stored.data).hexdigest()
    stored.size = len(stored.data)
    return stored
