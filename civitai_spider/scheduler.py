"""Scrapy's scheduler, with its JOBDIR queue state safe from ``kill -9``.

With JOBDIR, Scrapy's scheduler writes ``JOBDIR/requests.queue/active.json`` at close
by truncating the file and then writing it: a kill between the two leaves it empty,
and every later run of that JOBDIR died at open with a ``JSONDecodeError`` (seen in
``tests/test_resume.py``'s random kills). Here the file is written atomically
(``storage.atomic.write_atomically``), and one that cannot be read (left by an earlier
version, or damaged) is logged, counted (``scheduler/state_unreadable``) and treated
as no saved state. Nothing is lost by that: our scheduler queues live in memory
(``SCHEDULER_DISK_QUEUE``), so the state only names queues that come back empty, and
the chains resume from ``spider.state``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from scrapy.core.scheduler import Scheduler

from civitai_spider.storage.atomic import write_atomically

logger = logging.getLogger(__name__)

STATE_FILE = "active.json"  # Scrapy's name for it


class JobdirScheduler(Scheduler):
    def _read_dqs_state(self, dqdir: str) -> Any:
        try:
            return super()._read_dqs_state(dqdir)
        except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
            logger.warning(
                "Scheduler state %s unreadable (%s: %s): ignored; the chains resume from spider.state",
                Path(dqdir, STATE_FILE), exc.__class__.__name__, exc,
            )
            if self.crawler is not None:
                self.crawler.stats.inc_value("scheduler/state_unreadable")
            return ()

    def _write_dqs_state(self, dqdir: str, state: Any) -> None:
        write_atomically(Path(dqdir, STATE_FILE), json.dumps(state).encode("utf-8"))
