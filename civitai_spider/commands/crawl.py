"""``scrapy crawl`` that validates the spider's arguments before anything starts.

A bad argument becomes Scrapy's ``UsageError``: one ``error:`` line naming the
argument and what it accepts, exit status 2, no traceback and no request.
Spiders opt in with a ``check_arguments(kwargs)`` classmethod.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError

from civitai_spider.arguments import ArgumentError


class Command(ScrapyCrawlCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) == 1 and self.crawler_process is not None:
            spidercls = self.crawler_process.spider_loader.load(args[0])
            check = getattr(spidercls, "check_arguments", None)
            if check is not None:
                try:
                    check(opts.spargs)
                except ArgumentError as exc:
                    raise UsageError(str(exc), print_help=False) from None
        super().run(args, opts)
