"""The command line: ``python -m civitai_spider.export FORMAT STORE OUT [options]``.

Exit status: 0 when the export is written (images skipped for a problem of the
store are warned about and counted in the closing line), 2 for a bad option,
store or ``OUT`` (one ``error:`` line, nothing written), 1 when the export failed
part-way (one ``error:`` line; nothing under ``OUT``), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from civitai_spider.api import REACTIONS
from civitai_spider.arguments import Thresholds
from civitai_spider.export.output import OutputError, Writer
from civitai_spider.export.resize import MODES, Resize
from civitai_spider.export.run import ExportResult, export
from civitai_spider.export.samples import CAPTIONS, SampleOptions
from civitai_spider.export.source import LocalSource, StoreError, StoreSource, open_source

FORMATS = ("parquet", "webdataset", "imagefolder")
logger = logging.getLogger("civitai_spider.export")


class UsageError(Exception):
    """A bad option or combination: exit status 2."""


def whole_number(minimum: int, maximum: int | None = None) -> Any:
    """An argparse type: a whole number of at least ``minimum`` (and at most ``maximum``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, not {value}")
        return value

    return parse


positive, count = whole_number(1), whole_number(0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m civitai_spider.export",
        description="Export a harvest (a crawl's IMAGES_STORE) as a training set: parquet (one row per image), "
                    "webdataset (tar shards) or imagefolder (images + metadata.jsonl for datasets).",
    )
    parser.add_argument("format", choices=FORMATS, metavar="FORMAT", help="parquet, webdataset or imagefolder")
    parser.add_argument("store", metavar="STORE", help="the harvest: a folder, s3://bucket/prefix/ or gs://bucket/prefix/")
    parser.add_argument("out", metavar="OUT", type=Path,
                        help="what to write (a .parquet file; a folder for the others); must not exist")
    parser.add_argument("--caption", choices=CAPTIONS, default="clean",
                        help="the caption: clean (the prompt without <lora:...> tags, the default), prompt (as given), "
                             "none")
    for name in REACTIONS:
        parser.add_argument(f"--min-{name}", type=count, metavar="N", help=f"only images with at least N {name}")
    parser.add_argument("--max-dislikes", type=count, metavar="N", help="only images with at most N dislikes")
    parser.add_argument("--resize", type=positive, metavar="N", help="resize to N pixels (see --resize-mode)")
    parser.add_argument("--resize-mode", choices=MODES, default="keep_ratio",
                        help="keep_ratio: smaller side N (default); center_crop: then an N x N centre square; "
                             "border: larger side N, white borders to N x N (img2dataset's modes)")
    parser.add_argument("--resize-only-if-bigger", action="store_true", help="leave images already small enough as they are")
    parser.add_argument("--quality", type=whole_number(1, 100), default=95, help="JPEG/WebP quality of resized images (default 95)")
    parser.add_argument("--shard-size", type=positive, default=10_000, help="webdataset: samples per shard (default 10000)")
    parser.add_argument("--link", choices=("hard", "copy", "symlink"), default="hard",
                        help="imagefolder from a local store: hard links (default; copies across file systems), "
                             "copies, or symbolic links")
    parser.add_argument("--embed-images", action="store_true", help="parquet: the image bytes in an 'image' column")
    parser.add_argument("--videos", action="store_true", help="include videos (N.mp4, N.webm; never resized)")
    parser.add_argument("--workers", type=positive, default=8, help="images read (and resized) at once (default 8)")
    parser.add_argument("-s", "--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a Scrapy setting, for s3:// and gs:// stores (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser.parse_args(argv)


def settings_from(pairs: list[str]) -> Any:
    from scrapy.settings import Settings

    settings = Settings()
    settings.setmodule("civitai_spider.settings", priority="project")
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise UsageError(f"-s {pair!r}: expected NAME=VALUE")
        settings.set(name, value, priority="cmdline")
    return settings


def build_options(args: argparse.Namespace) -> SampleOptions:
    minimum = {name: value for name in REACTIONS if (value := getattr(args, f"min_{name}")) is not None}
    maximum = {"dislikes": args.max_dislikes} if args.max_dislikes is not None else {}
    resize = Resize(args.resize, args.resize_mode, args.resize_only_if_bigger, args.quality) if args.resize else None
    return SampleOptions(caption=args.caption, thresholds=Thresholds(minimum=minimum, maximum=maximum),
                         videos=args.videos, resize=resize)


def build_writer(args: argparse.Namespace, source: StoreSource) -> Writer:
    resized = args.resize is not None
    if args.format == "parquet":
        if resized and not args.embed_images:
            raise UsageError("--resize with parquet needs --embed-images (the rows only name the store's files)")
        from civitai_spider.export.parquet import ParquetWriter

        return ParquetWriter(args.out, store=source.location, embed_images=args.embed_images)
    if args.embed_images:
        raise UsageError(f"--embed-images is for parquet; {args.format} always holds the images")
    if args.format == "webdataset":
        from civitai_spider.export.webdataset import WebDatasetWriter

        return WebDatasetWriter(args.out, shard_size=args.shard_size, store=source.location)
    from civitai_spider.export.imagefolder import ImageFolderWriter

    local = source.path if isinstance(source, LocalSource) else None
    return ImageFolderWriter(args.out, link=args.link, local_store=local, resized=resized)


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def describe(args: argparse.Namespace, result: ExportResult) -> str:
    output = result.output
    size = _size(output.get("bytes", 0))
    where = {"parquet": size,
             "webdataset": f"{output.get('shards', 0)} shards, {size}",
             "imagefolder": f"{output.get('linked', 0)} linked, {output.get('copied', 0)} copied"}[args.format]
    line = (f"exported {result.exported} of {result.listed} images to {args.out} ({args.format}: {where}) "
            f"in {result.seconds:.1f} s")
    if result.skipped:
        line += "; skipped " + ", ".join(f"{reason} {n}" for reason, n in result.skipped.most_common())
    if result.ignored:
        line += f"; {result.ignored} files with names a crawl does not write ignored"
    if result.records_without_image:
        line += f"; {result.records_without_image} records N.json without their image"
    if result.without_record:
        line += (f"; {result.without_record} without their record N.json (stored by an older version): "
                 "reactions, user and date unknown")
    return line


class Progress:
    """A live bar on a terminal (tqdm on stderr); nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, result: ExportResult) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=result.listed, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)
        self.bar.update(1)
        if result.skipped and self.bar.n % 100 == 0:
            self.bar.set_postfix(skipped=sum(result.skipped.values()), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    progress = Progress(enabled=not args.quiet and sys.stderr.isatty())
    source: StoreSource | None = None
    try:
        settings = settings_from(args.set)
        options = build_options(args)
        source = open_source(args.store, settings)
        writer = build_writer(args, source)
        result = export(source, writer, options, workers=args.workers, progress=progress)
    except (UsageError, StoreError, OutputError) as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: nothing written to {args.out}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, whatever failed
        progress.close()
        logger.debug("export failed", exc_info=True)
        print(f"error: the export failed ({exc.__class__.__name__}: {exc}); nothing written to {args.out}",
              file=sys.stderr)
        return 1
    finally:
        if source is not None:
            source.close()
    progress.close()
    if result.problems:
        logger.warning("%d images skipped for a problem of the store (see the lines above)", result.problems)
    if not args.quiet:
        print(describe(args, result), file=sys.stderr)
        print(args.out)
    return 0
