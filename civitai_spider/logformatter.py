"""Log formatter: a dropped item is logged as its reason only, not as a full item dump.

The reason already names the image id (and the URL for failed downloads); the
item's whole ``meta`` in the log would bury the message.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy.logformatter import LogFormatter, LogFormatterResult


class CivitaiLogFormatter(LogFormatter):
    def dropped(self, item: Any, exception: BaseException, response: Any, spider: Any) -> LogFormatterResult:
        result = super().dropped(item, exception, response, spider)
        level = result.get("level", logging.WARNING)
        return {"level": level, "msg": "Dropped: %(exception)s", "args": {"exception": exception}}
