"""A static HTML gallery over a harvest folder (the ``IMAGES_STORE`` of a crawl).

    python -m civitai_spider.gallery FOLDER [--items FILE] [--out FILE] [--thumbs NAME]

writes one self-contained page (default ``FOLDER/gallery.html``): a grid of
cards (thumbnail, prompt, reactions, pixel size, links to the image and its
``N_meta.json``), a text filter and sorting, all client-side in plain
JavaScript with no external resource, so the page works offline over
``file://``.

What is read, and how:

- the folder is listed once (``os.scandir``): ``N.jpg``/``N.png``/... and
  ``N.mp4``/``N.webm`` are the images, ``N_pos-prompt.txt``,
  ``N_neg-prompt.txt`` and ``N_meta.json`` their metadata;
  ``thumbs/<name>/N.jpg`` are listed per thumbnail set. Hidden and ``.part``
  files (writes in progress) are ignored.
- each image's record ``N.json`` (the crawl writes one beside every image it
  stores) gives reactions (``stats``), ``width``/``height``, ``username``,
  ``baseModel``, ``createdAt`` and the prompts.
- for images without a record (stored by a version before records), an optional
  feed export of the crawl (``scrapy crawl civitai -O items.jsonl``; ``--items``,
  by default ``items.jsonl`` or else ``images.jsonl`` in the folder) gives the
  same. A JSON-array export (``-O items.json``, one item a line) is read too.
  Items whose image is not in the folder are ignored; the last line for an id wins.
- without either for an id: the prompt files are read, reactions are unknown,
  and the pixel size comes from the image header (Pillow's ``Image.open`` reads
  the header only; nothing is decoded). Videos without an item have no size.

The page embeds every record once, as one JSON blob (strings interned in a
table, so repeated negative prompts and user names cost nothing), and renders
one page of cards at a time (200 by default), so 100,000 images stay quick.
All text reaches the page through ``textContent``/attributes set from
JavaScript, and ``<``, ``>`` and ``&`` are escaped inside the blob: prompts
(``<lora:...>`` and arbitrary user text) can never become markup. Paths are
relative to the HTML file and URL-encoded.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from PIL import Image

from civitai_spider.api import as_count
from civitai_spider.storage import layout

logger = logging.getLogger(__name__)

#: Extensions of stored images (``original`` keeps JPEG and PNG; the rest in case
#: a store was filled another way) and videos.
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "avif"})
VIDEO_EXTS = frozenset({"mp4", "webm"})
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS

#: Feed exports looked for in the folder when ``--items`` is not given, in order.
DEFAULT_ITEMS_NAMES = ("items.jsonl", "images.jsonl")

#: ``stats`` keys, in the order they are embedded in the page.
STAT_KEYS = ("heartCount", "likeCount", "laughCount", "cryCount", "commentCount", "dislikeCount")

#: Longest prompt kept in the page (characters); longer ones are cut with an ellipsis.
MAX_TEXT_CHARS = 20_000

#: A thumbnail set is preferred when its longer side is at least this (CSS pixels of a card);
#: sets under ``MIN_THUMB_SIDE`` are not used unless asked for (``--thumbs``).
PREFERRED_THUMB_SIDE = 240
MIN_THUMB_SIDE = 120

DEFAULT_PAGE_SIZE = 200

# One embedded record (kept in step with the JavaScript below):
#   [id, ext, thumb, width, height, prompt, negative, user, baseModel, createdAt, stats, hasMeta]
# thumb: 1-based index into the payload's "thumbs" (0: the image itself); width/height 0: unknown;
# prompt, negative, user, baseModel: indices into the payload's "strings"; createdAt: ISO text or "";
# stats: [hearts, likes, laughs, cries, comments, dislikes], null when unknown (no item); hasMeta: 0/1.

_SUFFIX_POS, _SUFFIX_NEG, _SUFFIX_META = layout.POS_PROMPT, layout.NEG_PROMPT, layout.META


class GalleryError(Exception):
    """A problem the user can fix (missing folder, unreadable items file...): no traceback."""


@dataclass
class Listing:
    """What one listing of a harvest folder found, keyed by image id."""

    media: dict[int, str] = field(default_factory=dict)
    pos: set[int] = field(default_factory=set)
    neg: set[int] = field(default_factory=set)
    meta: set[int] = field(default_factory=set)
    records: set[int] = field(default_factory=set)  # ids with their record, N.json
    #: Thumbnail set name -> ids that have ``thumbs/<name>/<id>.jpg``.
    thumbs: dict[str, set[int]] = field(default_factory=dict)
    failures: int = 0


@dataclass(slots=True)
class ItemInfo:
    """The fields of one exported item the page uses."""

    width: int = 0
    height: int = 0
    stats: list[int] | None = None
    username: str = ""
    base_model: str = ""
    created_at: str = ""
    prompt: str | None = None
    negative: str | None = None


@dataclass(frozen=True)
class GalleryResult:
    """What ``build_gallery`` wrote."""

    out: Path
    images: int
    videos: int
    with_items: int
    bytes_written: int
    seconds: float


# --- reading the folder -------------------------------------------------------------


def _parse_id(stem: str) -> int | None:
    if stem and stem.isascii() and stem.isdigit():
        return int(stem)
    return None


def scan_folder(folder: Path) -> Listing:
    """List ``folder`` once (plus each ``thumbs/<name>/``); no image is opened.

    Only ``failures.jsonl`` is read, to count its lines for the page's summary.
    """
    listing = Listing()
    thumb_dirs: list[tuple[str, str]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # hidden, and the store's in-progress ``.N.ext.xxx.part`` files
            stem, dot, ext = name.rpartition(".")
            if not dot:
                if name == "thumbs" and entry.is_dir():
                    with os.scandir(entry.path) as sets:
                        thumb_dirs.extend((s.name, s.path) for s in sets if s.is_dir() and not s.name.startswith("."))
                continue
            image_id = _parse_id(stem)
            if image_id is not None:
                ext = ext.lower()
                if ext == "json":
                    listing.records.add(image_id)
                elif ext in MEDIA_EXTS and entry.is_file():
                    # Two files for one id (a store filled under two format
                    # policies): keep one, the same one on every run.
                    known = listing.media.get(image_id)
                    if known is None or name < known:
                        listing.media[image_id] = name
                continue
            if ext == "txt":
                if stem.endswith(_SUFFIX_POS):
                    image_id = _parse_id(stem[: -len(_SUFFIX_POS)])
                    if image_id is not None:
                        listing.pos.add(image_id)
                elif stem.endswith(_SUFFIX_NEG):
                    image_id = _parse_id(stem[: -len(_SUFFIX_NEG)])
                    if image_id is not None:
                        listing.neg.add(image_id)
            elif ext == "json" and stem.endswith(_SUFFIX_META):
                image_id = _parse_id(stem[: -len(_SUFFIX_META)])
                if image_id is not None:
                    listing.meta.add(image_id)
            elif name == layout.FAILURES_FILE:
                listing.failures = _count_lines(entry.path)
    for set_name, path in sorted(thumb_dirs):
        ids: set[int] = set()
        with os.scandir(path) as thumbs:
            for entry in thumbs:
                stem, dot, ext = entry.name.rpartition(".")
                if dot and ext.lower() == "jpg":
                    image_id = _parse_id(stem)
                    if image_id is not None:
                        ids.add(image_id)
        if ids:
            listing.thumbs[set_name] = ids
    return listing


def _count_lines(path: str) -> int:
    count = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                count += chunk.count(b"\n")
    except OSError as exc:
        logger.warning("could not read %s: %s", path, exc)
    return count


def header_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` as displayed, from the image header only; None if unreadable.

    A JPEG whose EXIF orientation turns it a quarter turn is reported turned,
    as browsers show it.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.format == "JPEG" and "exif" in im.info and im.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except Exception as exc:  # noqa: BLE001 - any unreadable header just means "size unknown"
        logger.debug("no size for %s: %s", path, exc)
        return None


def read_text(path: str) -> str:
    """A prompt file as text (undecodable bytes replaced), cut at ``MAX_TEXT_CHARS``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_TEXT_CHARS + 1)
    except OSError as exc:
        logger.warning("could not read %s: %s", path, exc)
        return ""
    return _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


# --- reading the feed export --------------------------------------------------------


def find_items_file(folder: Path) -> Path | None:
    """The feed export in ``folder`` used when ``--items`` is not given, if any."""
    for name in DEFAULT_ITEMS_NAMES:
        path = folder / name
        if path.is_file():
            return path
    return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def item_info(item: dict[str, Any]) -> ItemInfo:
    """The page's view of one exported item (anything malformed counts as absent)."""
    stats = item.get("stats")
    meta = item.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    prompt = meta.get("prompt")
    negative = meta.get("negativePrompt")
    return ItemInfo(
        width=as_count(item.get("width")),
        height=as_count(item.get("height")),
        # A stat missing from a stats dict counts as 0, as the spider's filter does.
        stats=[as_count(stats.get(key)) for key in STAT_KEYS] if isinstance(stats, dict) else None,
        username=_str(item.get("username")),
        base_model=_str(item.get("baseModel")),
        created_at=_str(item.get("createdAt")),
        prompt=_clip(prompt) if isinstance(prompt, str) and prompt else None,
        negative=_clip(negative) if isinstance(negative, str) and negative else None,
    )


def read_records(folder: Path, ids: Iterable[int]) -> dict[int, ItemInfo]:
    """The page's view of each image's record (``N.json``, written by the crawl beside every
    image it stores); one that cannot be read is counted and skipped with one warning."""
    infos: dict[int, ItemInfo] = {}
    bad = 0
    for image_id in ids:
        path = folder / layout.record_file(str(image_id))
        try:
            with open(path, "rb") as f:
                record = json.loads(f.read())
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            bad += 1
            logger.debug("record %s not read: %s", path, exc)
            continue
        infos[image_id] = item_info(record)
    if bad:
        logger.warning("%s: %d image records (N.json) could not be read; their prompts come from the prompt files",
                       folder, bad)
    return infos


def read_items(path: Path, wanted: Iterable[int] | None = None) -> dict[int, ItemInfo]:
    """Exported items by id, from JSON lines (or a one-item-a-line JSON array).

    Only ids in ``wanted`` are kept (when given). Lines that are not an item
    object are counted and skipped with one warning.
    """
    keep = set(wanted) if wanted is not None else None
    items: dict[int, ItemInfo] = {}
    bad = 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise GalleryError(f"cannot read items file {path}: {exc.strerror or exc}") from None
    with f:
        for line in f:
            line = line.strip()
            if line.endswith(","):
                line = line[:-1]
            if not line or line in ("[", "]"):
                continue
            try:
                item = json.loads(line)
                image_id = int(item["id"])
            except (ValueError, TypeError, KeyError):
                bad += 1
                continue
            if keep is not None and image_id not in keep:
                continue
            items[image_id] = item_info(item)
    if bad:
        logger.warning("%s: %d line(s) skipped (not an item with an id)", path, bad)
    return items


# --- the page data ------------------------------------------------------------------


class _Strings:
    """A string table: each distinct string is embedded once, records hold indices."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}
        self.values: list[str] = [""]

    def __call__(self, value: str) -> int:
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.values)
            self.values.append(value)
        return found


def url_prefix(folder: Path, out: Path) -> str:
    """The URL (relative to ``out``'s directory when possible) of ``folder``, ending in ``/``."""
    folder = folder.resolve()
    out_dir = out.resolve().parent
    try:
        rel = os.path.relpath(folder, out_dir)
    except ValueError:  # another drive (Windows): an absolute file URL
        return folder.as_uri().rstrip("/") + "/"
    if rel == os.curdir:
        return ""
    parts = rel.split(os.sep)
    return "/".join(quote(part, safe="") for part in parts) + "/"


def choose_thumb_sets(folder: Path, listing: Listing, wanted: str | None) -> list[str]:
    """The thumbnail sets to show, in order of preference (an id missing from all shows its image).

    ``wanted`` (``--thumbs``) alone when given. Otherwise, from one sample
    header per set: sets whose longer side is at least ``PREFERRED_THUMB_SIDE``
    from the smallest up, then those of at least ``MIN_THUMB_SIDE`` from the
    largest down; smaller ones would show blurred in a card and are not used.
    """
    names = list(listing.thumbs)
    if wanted is not None:
        if wanted not in listing.thumbs:
            found = ", ".join(names) or "none"
            raise GalleryError(f"no thumbnails named {wanted!r} in {folder / 'thumbs'} (found: {found})")
        return [wanted]
    sides: dict[str, int] = {}
    for name in names:
        sample = min(listing.thumbs[name])
        size = header_size(str(folder / "thumbs" / name / f"{sample}.jpg"))
        sides[name] = max(size) if size else 0
    big_enough = sorted((n for n in names if sides[n] >= PREFERRED_THUMB_SIDE), key=lambda n: sides[n])
    smaller = sorted(
        (n for n in names if MIN_THUMB_SIDE <= sides[n] < PREFERRED_THUMB_SIDE), key=lambda n: -sides[n]
    )
    skipped = [n for n in names if sides[n] < MIN_THUMB_SIDE]
    if skipped:
        logger.info("thumbnail sets not used (under %d px): %s", MIN_THUMB_SIDE, ", ".join(skipped))
    return big_enough + smaller


def build_records(
    folder: Path, listing: Listing, items: dict[int, ItemInfo], thumb_sets: Sequence[str]
) -> tuple[list[list[Any]], list[str], int]:
    """The page's records (newest id first), the string table, and how many are videos."""
    strings = _Strings()
    records: list[list[Any]] = []
    videos = 0
    thumb_ids = [listing.thumbs[name] for name in thumb_sets]
    base = str(folder)
    sep = os.sep
    for image_id in sorted(listing.media, reverse=True):
        name = listing.media[image_id]
        ext = name.rpartition(".")[2]
        is_video = ext.lower() in VIDEO_EXTS
        videos += is_video
        thumb = 0
        if not is_video:
            for index, ids in enumerate(thumb_ids, 1):
                if image_id in ids:
                    thumb = index
                    break
        item = items.get(image_id)
        if item is None:
            item = ItemInfo()
        prompt = item.prompt
        if prompt is None:
            prompt = read_text(f"{base}{sep}{image_id}{_SUFFIX_POS}.txt") if image_id in listing.pos else ""
        negative = item.negative
        if negative is None:
            negative = read_text(f"{base}{sep}{image_id}{_SUFFIX_NEG}.txt") if image_id in listing.neg else ""
        width, height = item.width, item.height
        if not (width and height) and not is_video:
            width, height = header_size(f"{base}{sep}{name}") or (0, 0)
        records.append(
            [
                image_id,
                ext,
                thumb,
                width,
                height,
                strings(prompt),
                strings(negative),
                strings(item.username),
                strings(item.base_model),
                item.created_at,
                item.stats,
                1 if image_id in listing.meta else 0,
            ]
        )
    return records, strings.values, videos


def data_json(payload: dict[str, Any]) -> str:
    """``payload`` as JSON safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` only ever occur inside JSON strings, where their
    ``\\u`` escapes mean the same: no ``</script>`` or ``<!--`` can appear.
    """
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def template(name: str) -> str:
    """One of the page's files (``civitai_spider/templates/``: HTML, CSS, JavaScript), package data."""
    return resources.files("civitai_spider.templates").joinpath(name).read_text(encoding="utf-8")


def write_page(out: TextIO, payload: dict[str, Any], title: str) -> None:
    """Write the page: ``gallery.html`` with its style, the data blob (one ``json.dumps``) and its script."""
    head, tail = template("gallery.html").split("@DATA@")
    out.write(head.replace("@TITLE@", html.escape(title)).replace("@STYLE@", template("gallery.css")))
    out.write('<script id="gallery-data" type="application/json">')
    out.write(data_json(payload))
    out.write("</script>")
    out.write(tail.replace("@SCRIPT@", template("gallery.js")))


def build_gallery(
    folder: Path | str,
    out: Path | str | None = None,
    items: Path | str | None = None,
    *,
    thumbs: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    title: str | None = None,
) -> GalleryResult:
    """Write the gallery page for the harvest in ``folder``; see the module docstring."""
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.exists():
        raise GalleryError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise GalleryError(f"not a folder: {folder}")
    out = Path(out) if out is not None else folder / "gallery.html"
    if out.is_dir():
        raise GalleryError(f"--out is a folder, not a file: {out}")
    if page_size < 1:
        raise GalleryError(f"page size must be at least 1, not {page_size}")
    items_path = Path(items) if items is not None else find_items_file(folder)
    if items is not None and not items_path.is_file():  # type: ignore[union-attr]
        raise GalleryError(f"items file not found: {items_path}")

    try:
        listing = scan_folder(folder)
    except OSError as exc:
        raise GalleryError(f"cannot list {folder}: {exc.strerror or exc}") from None
    logger.info("%s: %d images/videos listed", folder, len(listing.media))
    item_infos = read_records(folder, (i for i in listing.media if i in listing.records))
    logger.info("%s: records (N.json) for %d of them", folder, len(item_infos))
    without = [i for i in listing.media if i not in item_infos]
    if items_path is not None and without:
        from_feed = read_items(items_path, without)
        item_infos.update(from_feed)
        logger.info("%s: items for %d of the %d without a record", items_path, len(from_feed), len(without))
    elif without:
        logger.info("%d without a record (stored by an older version) and no items file: their reactions are "
                    "unknown, sizes from the image headers", len(without))
    with warnings.catch_warnings():
        # Only headers are read: a huge image is no bomb here (the crawl reports those).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        thumb_sets = choose_thumb_sets(folder, listing, thumbs)
        records, strings, videos = build_records(folder, listing, item_infos, thumb_sets)

    payload = {
        "version": 1,
        "base": url_prefix(folder, out),
        "thumbs": [quote(name, safe="") for name in thumb_sets],
        "pageSize": page_size,
        "failures": listing.failures,
        "withItems": len(item_infos),
        "strings": strings,
        "records": records,
    }
    if title is None:
        title = f"{folder.resolve().name or folder} · civitai gallery"
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        # errors="backslashreplace": a lone surrogate (possible in an item's
        # JSON) becomes the \\uXXXX escape it came from, still valid JSON.
        with open(part, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as f:
            write_page(f, payload, title)
        os.replace(part, out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise GalleryError(f"cannot write {out}: {exc.strerror or exc}") from None
    result = GalleryResult(
        out=out,
        images=len(records),
        videos=videos,
        with_items=len(item_infos),
        bytes_written=out.stat().st_size,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "wrote %s: %d cards (%d videos, %d with items), %.1f MB in %.2f s",
        out,
        result.images,
        result.videos,
        result.with_items,
        result.bytes_written / 1e6,
        result.seconds,
    )
    return result


# --- command line -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m civitai_spider.gallery",
        description="Write a static HTML gallery (one page, works offline) over a harvest folder.",
    )
    parser.add_argument("folder", type=Path, help="the harvest folder (IMAGES_STORE)")
    parser.add_argument(
        "--items",
        type=Path,
        help="a feed export of the crawl (scrapy crawl civitai -O items.jsonl) for images stored without a "
        "record (N.json; older versions): reactions and sizes; default: items.jsonl or images.jsonl in FOLDER",
    )
    parser.add_argument("--out", type=Path, help="the page to write (default: FOLDER/gallery.html)")
    parser.add_argument("--thumbs", metavar="NAME", help="thumbnail set to show (thumbs/NAME/); default: picked by size")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="cards per page (default: %(default)s)")
    parser.add_argument("--title", help="page title (default: the folder name)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        result = build_gallery(
            args.folder, args.out, args.items, thumbs=args.thumbs, page_size=args.page_size, title=args.title
        )
    except GalleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if not args.quiet:
        print(result.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
