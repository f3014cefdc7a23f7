"""``scrapy crawl`` that validates the spider's arguments first, and exits non-zero on failure.

A bad argument becomes Scrapy's ``UsageError``: one ``error:`` line naming the
argument and what it accepts, exit status 2, no traceback and no request.
Spiders opt in with a ``check_arguments(kwargs)`` classmethod.

A setting of ours with a value it cannot take (``civitai_spider.setting_checks``), an
``IMAGES_STORE`` this project cannot write (another scheme, or ``gs://`` without its
package) and a ``CIVITAI_REDIS_URL`` that is not a Redis URL are usage errors too (exit 2).
A crawl that closes with one of ``FAILED_REASONS`` (the API refusing the key or
unreachable from the first page, a store that cannot be written) exits with 1.
"""

from __future__ import annotations

import argparse
from argparse import RawDescriptionHelpFormatter
from typing import Any
from urllib.parse import urlsplit

from scrapy.commands import ScrapyHelpFormatter
from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError

from civitai_spider import settings as project_defaults
from civitai_spider.arguments import ARGUMENT_HELP, ArgumentError
from civitai_spider.extensions.summary import FAILED_REASONS
from civitai_spider.setting_checks import SettingError, check_settings
from civitai_spider.shared_crawl.urls import REDIS_SCHEMES, redacted, redis_url
from civitai_spider.storage import storage_problem

class _HelpFormatter(RawDescriptionHelpFormatter, ScrapyHelpFormatter):
    """Scrapy's help layout, with the spider-argument list kept as written."""


class Command(ScrapyCrawlCommand):
    _crawler: Any = None

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.formatter_class = _HelpFormatter
        width = 20  # a longer name gets a line of its own
        parser.epilog = "Spider arguments of civitai (-a NAME=VALUE; README: Spider arguments)\n" + "\n".join(
            f"  {name:<{width}}  {text}" if len(name) <= width else f"  {name}\n  {'':<{width}}  {text}"
            for name, text in ARGUMENT_HELP.items())

    def _create_crawler(self, spname: str) -> Any:
        self._crawler = super()._create_crawler(spname)
        return self._crawler

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) == 1 and self.crawler_process is not None:
            spidercls = self.crawler_process.spider_loader.load(args[0])
            check = getattr(spidercls, "check_arguments", None)
            if check is not None:
                try:
                    check(opts.spargs)
                except ArgumentError as exc:
                    raise UsageError(str(exc), print_help=False) from None
        try:
            check_settings(self.settings, project_defaults)
        except SettingError as exc:
            raise UsageError(str(exc), print_help=False) from None
        problem = storage_problem(str(self.settings.get("IMAGES_STORE") or ""))
        if problem:
            raise UsageError(problem, print_help=False)
        url = redis_url(self.settings)
        if url and urlsplit(url).scheme not in REDIS_SCHEMES:
            raise UsageError(
                f"CIVITAI_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {redacted(url)!r}",
                print_help=False,
            )
        super().run(args, opts)
        stats = getattr(self._crawler, "stats", None)
        if stats is not None and stats.get_value("finish_reason") in FAILED_REASONS:
            self.exitcode = 1
