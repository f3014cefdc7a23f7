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
- an optional feed export of the crawl (``scrapy crawl civitai -O
  items.jsonl``; ``--items``, by default ``items.jsonl`` or else
  ``images.jsonl`` in the folder) gives reactions (``stats``), ``width``/
  ``height``, ``username``, ``baseModel``, ``createdAt`` and the prompts. A
  JSON-array export (``-O items.json``, one item a line) is read too. Items
  whose image is not in the folder are ignored; the last line for an id wins.
- without an item for an id: the prompt files are read, reactions are unknown,
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
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from PIL import Image

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

_SUFFIX_POS = "_pos-prompt"
_SUFFIX_NEG = "_neg-prompt"
_SUFFIX_META = "_meta"


class GalleryError(Exception):
    """A problem the user can fix (missing folder, unreadable items file...): no traceback."""


@dataclass
class Listing:
    """What one listing of a harvest folder found, keyed by image id."""

    media: dict[int, str] = field(default_factory=dict)
    pos: set[int] = field(default_factory=set)
    neg: set[int] = field(default_factory=set)
    meta: set[int] = field(default_factory=set)
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
                if ext in MEDIA_EXTS and entry.is_file():
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
            elif name == "failures.jsonl":
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


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value:
        return max(int(value), 0)
    return 0


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
        width=_int(item.get("width")),
        height=_int(item.get("height")),
        # A stat missing from a stats dict counts as 0, as the spider's filter does.
        stats=[_int(stats.get(key)) for key in STAT_KEYS] if isinstance(stats, dict) else None,
        username=_str(item.get("username")),
        base_model=_str(item.get("baseModel")),
        created_at=_str(item.get("createdAt")),
        prompt=_clip(prompt) if isinstance(prompt, str) and prompt else None,
        negative=_clip(negative) if isinstance(negative, str) and negative else None,
    )


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


def write_page(out: TextIO, payload: dict[str, Any], title: str) -> None:
    """Write the page: head, the data blob (one ``json.dumps``), the script."""
    out.write(_PAGE_HEAD.replace("@TITLE@", html.escape(title)))
    out.write('<script id="gallery-data" type="application/json">')
    out.write(data_json(payload))
    out.write("</script>\n")
    out.write(_PAGE_TAIL)


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
    item_infos: dict[int, ItemInfo] = {}
    if items_path is not None:
        item_infos = read_items(items_path, listing.media)
        logger.info("%s: items for %d of them", items_path, len(item_infos))
    else:
        logger.info("no items file: reactions unknown, sizes from the image headers")
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
        help="a feed export of the crawl (scrapy crawl civitai -O items.jsonl) for reactions and sizes; "
        "default: items.jsonl or images.jsonl in FOLDER when present",
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


# --- the page -----------------------------------------------------------------------

_PAGE_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>@TITLE@</title>
<style>
:root{--bg:#0e1014;--panel:#161a21;--card:#1a1f27;--line:#2a303b;--fg:#e7eaee;--muted:#98a2b3;--dim:#6b7587;
--accent:#ff5c7a;--link:#8ab4ff;--chip:#232a35;color-scheme:dark}
*{box-sizing:border-box}
html,body{margin:0;background:var(--bg);color:var(--fg)}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif}
a{color:var(--link);text-decoration:none}
a:hover{text-decoration:underline}
header{position:sticky;top:0;z-index:5;background:rgba(14,16,20,.94);backdrop-filter:blur(8px);
border-bottom:1px solid var(--line);padding:10px 18px;display:flex;flex-wrap:wrap;align-items:center;gap:10px 18px}
.titles{display:flex;flex-direction:column;min-width:0}
header h1{font-size:16px;font-weight:650;margin:0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:48ch}
#summary{color:var(--muted);font-size:12.5px}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-left:auto}
input,select,button{font:inherit;color:var(--fg);background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:6px 10px}
input[type=search]{width:min(300px,70vw)}
input:focus,select:focus,button:focus-visible{outline:2px solid var(--link);outline-offset:1px}
button{cursor:pointer}
button:disabled{opacity:.4;cursor:default}
.pager[hidden]{display:none}
.pager{display:flex;align-items:center;gap:8px;justify-content:center;padding:12px 18px;color:var(--muted)}
.pager .count{min-width:9ch;text-align:center;font-variant-numeric:tabular-nums}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:16px;padding:16px 18px 8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;overflow:hidden;display:flex;flex-direction:column;
content-visibility:auto;contain-intrinsic-size:auto 430px}
.media{display:block;position:relative;aspect-ratio:4/5;overflow:hidden;background:#0a0c10}
.media img,.media video{position:absolute;inset:0;display:block;width:100%;height:100%;object-fit:contain}
.badge{position:absolute;top:8px;left:8px;background:rgba(0,0,0,.7);color:#fff;font-size:11px;font-weight:650;
letter-spacing:.04em;padding:2px 7px;border-radius:6px}
.body{padding:10px 12px 12px;display:flex;flex-direction:column;gap:7px;flex:1}
.stats{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:13px;font-variant-numeric:tabular-nums;color:var(--fg)}
.stat{display:inline-flex;align-items:center;gap:4px}
.stat svg{width:15px;height:15px;fill:currentColor}
.stat.heart{color:var(--accent)}
.stats .unknown{color:var(--dim);font-style:italic}
.prompt{margin:0;color:#cdd3dc;font-size:12.5px;white-space:pre-wrap;overflow-wrap:anywhere;cursor:pointer;
display:-webkit-box;-webkit-line-clamp:4;-webkit-box-orient:vertical;overflow:hidden}
.prompt.none{color:var(--dim);font-style:italic;cursor:default}
.card.open .prompt{display:block;-webkit-line-clamp:unset;overflow:visible}
.neg{display:none;margin:0;font-size:12px;color:var(--muted);white-space:pre-wrap;overflow-wrap:anywhere}
.neg b{color:var(--dim);font-weight:600}
.card.open .neg{display:block}
.info{display:flex;flex-wrap:wrap;gap:5px;font-size:12px;color:var(--muted);margin-top:auto}
.chip{background:var(--chip);border-radius:6px;padding:1px 7px;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.links{display:flex;gap:12px;font-size:12.5px;align-items:center}
.links .id{margin-left:auto;color:var(--dim);font-variant-numeric:tabular-nums}
#empty{display:none;text-align:center;color:var(--muted);padding:60px 20px;font-size:15px}
footer{color:var(--dim);font-size:12px;text-align:center;padding:6px 18px 24px}
</style>
</head>
<body>
<svg width="0" height="0" style="position:absolute" aria-hidden="true">
<symbol id="i-heart" viewBox="0 0 24 24"><path d="M12 21.3l-1.45-1.32C5.4 15.36 2 12.28 2 8.5 2 5.42 4.42 3 7.5 3c1.74 0 3.41.81 4.5 2.09C13.09 3.81 14.76 3 16.5 3 19.58 3 22 5.42 22 8.5c0 3.78-3.4 6.86-8.55 11.54L12 21.35z"/></symbol>
<symbol id="i-like" viewBox="0 0 24 24"><path d="M2 21h4V9H2v12zm20-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L13.17 1 6.59 7.59C6.22 7.95 6 8.45 6 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z"/></symbol>
<symbol id="i-laugh" viewBox="0 0 24 24"><path d="M12 2a10 10 0 100 20 10 10 0 000-20zM8.5 8a1.5 1.5 0 110 3 1.5 1.5 0 010-3zm7 0a1.5 1.5 0 110 3 1.5 1.5 0 010-3zM12 18c-2.6 0-4.8-1.7-5.6-4h11.2c-.8 2.3-3 4-5.6 4z"/></symbol>
<symbol id="i-cry" viewBox="0 0 24 24"><path d="M12 2a10 10 0 100 20 10 10 0 000-20zM8.5 8a1.5 1.5 0 110 3 1.5 1.5 0 010-3zm7 0a1.5 1.5 0 110 3 1.5 1.5 0 010-3zM7.2 17.5c.9-1.8 2.7-3 4.8-3s3.9 1.2 4.8 3l-1.3.7c-.7-1.3-2-2.2-3.5-2.2s-2.8.9-3.5 2.2l-1.3-.7z"/></symbol>
<symbol id="i-comment" viewBox="0 0 24 24"><path d="M20 2H4a2 2 0 00-2 2v18l4-4h14a2 2 0 002-2V4a2 2 0 00-2-2z"/></symbol>
</svg>
<header>
<div class="titles"><h1>@TITLE@</h1><span id="summary"></span></div>
<div class="controls">
<input id="filter" type="search" placeholder="Filter: prompt, user, model, id…" aria-label="Filter" autocomplete="off" spellcheck="false">
<select id="sort" aria-label="Sort">
<option value="newest">Newest</option>
<option value="hearts">Most hearts</option>
<option value="likes">Most likes</option>
<option value="total">Most reactions</option>
<option value="comments">Most comments</option>
<option value="oldest">Oldest</option>
<option value="id">Id ascending</option>
</select>
<select id="pagesize" aria-label="Cards per page">
<option value="50">50 / page</option>
<option value="100">100 / page</option>
<option value="200">200 / page</option>
<option value="500">500 / page</option>
</select>
</div>
</header>
<nav class="pager" id="pager-top" aria-label="Pages"></nav>
<main id="grid" aria-live="polite"></main>
<div id="empty">No image matches.</div>
<nav class="pager" id="pager-bottom" aria-label="Pages"></nav>
<footer>Static page written by civitai_spider.gallery · ← → turn pages · click a prompt to expand it</footer>
<noscript><p style="text-align:center">This gallery needs JavaScript.</p></noscript>
"""

_PAGE_TAIL = r"""<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("gallery-data").textContent);
  const S = data.strings, R = data.records, BASE = data.base, THUMBS = data.thumbs;
  // Record fields (see gallery.py): id, ext, thumb, width, height, prompt, negative,
  // user, baseModel, createdAt, stats [hearts, likes, laughs, cries, comments, dislikes], hasMeta
  const ID = 0, EXT = 1, TH = 2, W = 3, HT = 4, P = 5, NG = 6, U = 7, BM = 8, C = 9, ST = 10, M = 11;
  const VIDEO = new Set(["mp4", "webm"]);
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const filterInput = $("filter"), sortSelect = $("sort"), sizeSelect = $("pagesize"), grid = $("grid");
  const nf = new Intl.NumberFormat();

  const state = { q: "", sort: "newest", page: 1, size: data.pageSize || 200 };
  let hay = null;          // lower-cased search text per record, built on first filter
  const orders = new Map(); // sort key -> record indices in that order
  let view = [];            // indices of the records shown, in order

  function src(r) { return BASE + r[ID] + "." + r[EXT]; }
  function thumbSrc(r) { return r[TH] ? BASE + "thumbs/" + THUMBS[r[TH] - 1] + "/" + r[ID] + ".jpg" : src(r); }
  function total(st) { return st[0] + st[1] + st[2] + st[3]; }

  function sortKey(name) {
    // Unknown reactions (no item) sort after every known count.
    const stat = (i) => (r) => (r[ST] ? r[ST][i] : -1);
    switch (name) {
      case "hearts": return stat(0);
      case "likes": return stat(1);
      case "comments": return stat(4);
      case "total": return (r) => (r[ST] ? total(r[ST]) : -1);
      default: return null;
    }
  }

  function order(name) {
    let o = orders.get(name);
    if (o) return o;
    o = Array.from(R.keys());
    const key = sortKey(name);
    if (key) {
      const k = R.map(key);
      o.sort((a, b) => k[b] - k[a] || R[b][ID] - R[a][ID]);
    } else if (name === "newest" || name === "oldest") {
      // createdAt (ISO 8601, compared as text), then a higher id is newer.
      // Records without a date sort as the oldest.
      const sign = name === "newest" ? 1 : -1;
      o.sort((a, b) => {
        const ca = R[a][C], cb = R[b][C];
        return sign * ((ca < cb ? 1 : ca > cb ? -1 : 0) || R[b][ID] - R[a][ID]);
      });
    } else {
      o.sort((a, b) => R[a][ID] - R[b][ID]);
    }
    orders.set(name, o);
    return o;
  }

  function haystack() {
    if (!hay) hay = R.map((r) => (r[ID] + "\n" + S[r[P]] + "\n" + S[r[NG]] + "\n" + S[r[U]] + "\n" + S[r[BM]]).toLowerCase());
    return hay;
  }

  function recompute() {
    const o = order(state.sort);
    const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    if (!terms.length) { view = o; return; }
    const h = haystack();
    view = o.filter((i) => { const t = h[i]; for (const term of terms) if (!t.includes(term)) return false; return true; });
  }

  function pages() { return Math.max(1, Math.ceil(view.length / state.size)); }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function link(href, text) {
    const a = el("a", null, text);
    a.href = href; a.target = "_blank"; a.rel = "noopener noreferrer";
    return a;
  }

  function stat(cls, icon, n, label) {
    const s = el("span", "stat " + cls);
    s.title = nf.format(n) + " " + label;
    const svg = document.createElementNS(SVGNS, "svg");
    const use = document.createElementNS(SVGNS, "use");
    use.setAttribute("href", "#i-" + icon);
    svg.appendChild(use);
    s.append(svg, nf.format(n));
    return s;
  }

  function card(r) {
    const c = el("article", "card");
    c.dataset.id = r[ID];
    const isVideo = VIDEO.has(r[EXT].toLowerCase());
    const media = link(src(r));
    media.className = "media";
    if (isVideo) {
      const v = document.createElement("video");
      v.muted = true; v.loop = true; v.playsInline = true; v.preload = "metadata";
      if (r[W] && r[HT]) { v.width = r[W]; v.height = r[HT]; }
      v.dataset.src = src(r);
      lazyVideos.observe(v);
      c.addEventListener("mouseenter", () => { if (v.src) v.play().catch(() => {}); });
      c.addEventListener("mouseleave", () => v.pause());
      media.append(v, el("span", "badge", "VIDEO"));
    } else {
      const img = document.createElement("img");
      img.loading = "lazy"; img.decoding = "async";
      if (r[W] && r[HT]) { img.width = r[W]; img.height = r[HT]; }
      img.alt = "image " + r[ID];
      img.src = thumbSrc(r);
      media.append(img);
    }
    c.append(media);

    const body = el("div", "body");
    const stats = el("div", "stats");
    const st = r[ST];
    if (st) {
      stats.append(stat("heart", "heart", st[0], "hearts"), stat("like", "like", st[1], "likes"),
        stat("laugh", "laugh", st[2], "laughs"), stat("cry", "cry", st[3], "cries"),
        stat("comment", "comment", st[4], "comments"));
      stats.title = nf.format(total(st)) + " reactions, " + nf.format(st[5]) + " dislikes";
    } else {
      stats.append(el("span", "unknown", "reactions unknown"));
    }
    body.append(stats);

    const prompt = S[r[P]], neg = S[r[NG]];
    const p = el("p", prompt ? "prompt" : "prompt none", prompt || "no prompt");
    if (prompt || neg) {
      p.title = prompt + (neg ? "\n\nNegative: " + neg : "");
      p.addEventListener("click", () => c.classList.toggle("open"));
    }
    body.append(p);
    if (neg) {
      const n = el("p", "neg");
      n.append(el("b", null, "Negative: "), neg);
      body.append(n);
    }

    const info = el("div", "info");
    info.append(el("span", "chip", r[W] && r[HT] ? r[W] + "×" + r[HT] : "size unknown"));
    if (S[r[BM]]) info.append(el("span", "chip", S[r[BM]]));
    if (S[r[U]]) info.append(el("span", "chip", "@" + S[r[U]]));
    if (r[C]) info.append(el("span", "chip", r[C].slice(0, 10)));
    body.append(info);

    const links = el("div", "links");
    links.append(link(src(r), isVideo ? "video" : "image"));
    if (r[M]) links.append(link(BASE + r[ID] + "_meta.json", "meta"));
    links.append(link("https://civitai.com/images/" + r[ID], "civitai"));
    links.append(el("span", "id", "#" + r[ID]));
    body.append(links);
    c.append(body);
    return c;
  }

  const lazyVideos = "IntersectionObserver" in window
    ? new IntersectionObserver((entries) => {
        for (const e of entries) if (e.isIntersecting) { e.target.src = e.target.dataset.src; lazyVideos.unobserve(e.target); }
      }, { rootMargin: "300px" })
    : { observe: (v) => { v.src = v.dataset.src; }, disconnect() {} };

  function pager(nav) {
    const n = pages();
    nav.hidden = n === 1;
    const btn = (label, page, title) => {
      const b = el("button", null, label);
      b.type = "button"; b.title = title;
      b.disabled = page < 1 || page > n || page === state.page;
      b.addEventListener("click", () => go(page));
      return b;
    };
    const count = el("span", "count", "Page " + nf.format(state.page) + " / " + nf.format(n));
    nav.replaceChildren(btn("«", 1, "First page"), btn("‹ Prev", state.page - 1, "Previous page"), count,
      btn("Next ›", state.page + 1, "Next page"), btn("»", n, "Last page"));
  }

  function render() {
    state.page = Math.min(Math.max(1, state.page), pages());
    lazyVideos.disconnect();
    const start = (state.page - 1) * state.size;
    const frag = document.createDocumentFragment();
    for (const i of view.slice(start, start + state.size)) frag.appendChild(card(R[i]));
    grid.replaceChildren(frag);
    grid.dataset.query = state.q;
    $("empty").style.display = view.length ? "none" : "block";
    pager($("pager-top")); pager($("pager-bottom"));
    const shown = view.length === R.length ? nf.format(R.length) + " images"
      : nf.format(view.length) + " of " + nf.format(R.length) + " images match";
    let summary = shown;
    if (data.withItems < R.length) summary += " · reactions known for " + nf.format(data.withItems);
    if (data.failures) summary += " · " + nf.format(data.failures) + " failures recorded";
    $("summary").textContent = summary;
    saveHash();
  }

  function go(page) { state.page = page; render(); window.scrollTo(0, 0); }

  function saveHash() {
    const p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.sort !== "newest") p.set("sort", state.sort);
    if (state.size !== (data.pageSize || 200)) p.set("size", state.size);
    if (state.page > 1) p.set("page", state.page);
    const h = p.toString();
    try { history.replaceState(null, "", h ? "#" + h : location.pathname + location.search); } catch (e) { /* file:// may refuse */ }
  }

  function loadHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    state.q = p.get("q") || "";
    const sort = p.get("sort");
    if (sort && [...sortSelect.options].some((o) => o.value === sort)) state.sort = sort;
    const size = parseInt(p.get("size"), 10);
    if (size > 0 && size <= 1000) state.size = size;
    state.page = parseInt(p.get("page"), 10) || 1;
  }

  loadHash();
  if (![...sizeSelect.options].some((o) => +o.value === state.size)) {
    const o = el("option", null, state.size + " / page"); o.value = state.size; sizeSelect.append(o);
  }
  filterInput.value = state.q; sortSelect.value = state.sort; sizeSelect.value = String(state.size);
  recompute(); render();

  let timer = 0;
  filterInput.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = filterInput.value.trim(); state.page = 1; recompute(); render(); }, R.length > 20000 ? 200 : 60);
  });
  sortSelect.addEventListener("change", () => { state.sort = sortSelect.value; state.page = 1; recompute(); render(); });
  sizeSelect.addEventListener("change", () => { state.size = +sizeSelect.value; state.page = 1; render(); });
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "ArrowRight" && state.page < pages()) go(state.page + 1);
    else if (e.key === "ArrowLeft" && state.page > 1) go(state.page - 1);
  });
  document.documentElement.dataset.ready = "1";
})();
</script>
</body>
</html>
"""


if __name__ == "__main__":
    sys.exit(main())
