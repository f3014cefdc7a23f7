"""Exceptions shared by the spider and the pipelines."""

from __future__ import annotations

from scrapy.exceptions import DropItem


class RetryLater(DropItem):
    """An item dropped for now, not for good: it is not done, and a later run fetches it again.

    Raised for images that failed to download or store, and for items left unprocessed
    by a stopping crawl. The spider keeps the page of such an item unfinished in its
    resume state, so a resumed job walks that page again.
    """
