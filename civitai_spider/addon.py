"""The project's add-on (``ADDONS``): the wiring that depends on how the crawl runs.

One process (the default): ``scheduler.ChainScheduler``, and JOBDIR resume through
``extensions.chain_state.ChainState``. Many processes on one crawl
(``CIVITAI_REDIS_URL``, as a setting or in the environment): the shared crawl's
scheduler, extension, spider middleware and claim pipeline instead
(``shared_crawl.addon.shared_settings``). Everything is set at add-on priority,
so a setting of the project or the command line still wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from civitai_spider.config import CivitaiConfig

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

CHAIN_STATE = "civitai_spider.extensions.chain_state.ChainState"


class CivitaiAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        config = CivitaiConfig.from_settings(settings)  # every way a crawl starts: bad settings stop it here
        if config.redis_url:
            from civitai_spider.shared_crawl.addon import shared_settings  # Redis only when asked for

            shared_settings(settings, config)  # the queue and the leases in Redis are the resume state
            return
        settings.set("SCHEDULER", "civitai_spider.scheduler.ChainScheduler", priority="addon")
        settings["EXTENSIONS"][CHAIN_STATE] = 100
