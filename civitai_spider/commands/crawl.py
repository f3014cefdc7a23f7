"""``scrapy crawl`` that validates the spider's arguments first, and exits non-zero on failure.

A bad argument becomes Scrapy's ``UsageError``: one ``error:`` line naming the
argument and what it accepts, exit status 2, no traceback and no request.
Spiders opt in with a ``check_arguments(kwargs)`` classmethod.

A setting of ours with a value it cannot take (``civitai_spider.config``, a
``CIVITAI_REDIS_URL`` that is not a Redis URL among them) and an ``IMAGES_STORE``
this project cannot write (another scheme, or ``gs://`` without its package) are
usage errors too (exit 2). The exit status of a crawl that ran is
``outcome.exit_status``: 1 when it could not do its job.
"""

from __future__ import annotations

import argparse
from argparse import RawDescriptionHelpFormatter
from typing import Any

from scrapy.commands import ScrapyHelpFormatter
from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError

from civitai_spider.arguments import ARGUMENT_HELP, ArgumentError
from civitai_spider.config import CivitaiConfig, SettingError
from civitai_spider.outcome import exit_status
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
            CivitaiConfig.from_settings(self.settings)
        except SettingError as exc:
            raise UsageError(str(exc), print_help=False) from None
        problem = storage_problem(str(self.settings.get("IMAGES_STORE") or ""))
        if problem:
            raise UsageError(problem, print_help=False)
        super().run(args, opts)
        stats = getattr(self._crawler, "stats", None)
        if stats is not None:
            self.exitcode = exit_status(stats.get_value("finish_reason"))
