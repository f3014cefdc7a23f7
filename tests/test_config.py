"""The config: every setting of ours read once and checked; a bad value is one ``error:`` line
and exit status 2 from our command, and stops any other way of starting a crawl too."""

from __future__ import annotations

import pytest
import pytest_twisted
from scrapy.settings import Settings

from civitai_spider import settings as project_defaults
from civitai_spider.config import CivitaiConfig, SettingError
from tests.support import run_scrapy


def settings(**values: object) -> Settings:
    built = Settings()
    built.setmodule(project_defaults, priority="project")
    built.setdict(values, priority="cmdline")
    return built


def test_the_defaults_pass():
    config = CivitaiConfig.from_settings(settings())
    assert (config.page_limit, config.image_format, config.image_hosts) == (200, "original", ("civitai.com", "civitai.red"))


def test_every_setting_of_ours_has_a_field_and_the_other_way_round():
    from dataclasses import fields

    declared = {name for name in vars(project_defaults) if name.startswith(("CIVITAI_", "FIELDSTATS_"))}
    assert {spec.metadata["setting"] for spec in fields(CivitaiConfig)} == declared
    assert all(spec.metadata["doc"] for spec in fields(CivitaiConfig))


def test_settings_built_without_ours_get_our_defaults():
    assert CivitaiConfig.from_settings(Settings()) == CivitaiConfig.from_settings(settings())


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CIVITAI_IMAGE_FORMAT", "webp", "CIVITAI_IMAGE_FORMAT must be one of original, jpeg, png, got 'webp'"),
    ("CIVITAI_PROGRESS", "loud", "CIVITAI_PROGRESS must be one of auto, bar, log, off, got 'loud'"),
    ("CIVITAI_REDIS_START", "later", "CIVITAI_REDIS_START must be one of auto, new, resume, restart, got 'later'"),
    ("CIVITAI_JPEG_QUALITY", "high", "CIVITAI_JPEG_QUALITY must be a whole number, got 'high'"),
    ("CIVITAI_JPEG_QUALITY", "101", "CIVITAI_JPEG_QUALITY must be 1..100, got 101"),
    ("CIVITAI_PAGE_LIMIT", "0", "CIVITAI_PAGE_LIMIT must be 1..200 (items per API page), got 0"),
    ("CIVITAI_RETRY_BACKOFF_BASE", "soon", "CIVITAI_RETRY_BACKOFF_BASE must be a number, got 'soon'"),
    ("CIVITAI_CAPTION_FILES", "maybe", "CIVITAI_CAPTION_FILES must be true or false, got 'maybe'"),
    ("CIVITAI_RECORD_FLUSH_SECONDS", "-1", "CIVITAI_RECORD_FLUSH_SECONDS must be 0 (no time limit) or more, got -1.0"),
    ("FIELDSTATS_MAX_DEPTH", "deep", "FIELDSTATS_MAX_DEPTH must be a whole number, got 'deep'"),
    ("CIVITAI_EARLY_STOP_PAGES", "0", "CIVITAI_EARLY_STOP_PAGES is gone: early stop no longer counts barren pages: "
     "it stops exactly where the sort proves every later image below the thresholds; CIVITAI_EARLY_STOP=false "
     "turns it off"),
])
def test_a_bad_value_names_the_setting_and_what_it_takes(name, value, message):
    with pytest.raises(SettingError) as raised:
        CivitaiConfig.from_settings(settings(**{name: value}))
    assert str(raised.value) == message


def test_good_values_in_other_spellings_pass():
    config = CivitaiConfig.from_settings(settings(CIVITAI_PROGRESS="LOG", CIVITAI_CAPTION_FILES="1",
                                                  CIVITAI_JPEG_QUALITY="90", CIVITAI_STATE_SAVE_INTERVAL="2",
                                                  CIVITAI_IMAGE_FORMAT=" PNG "))
    assert (config.progress, config.caption_files, config.jpeg_quality, config.image_format) == ("log", True, 90, "png")


@pytest_twisted.ensureDeferred
async def test_a_crawl_started_another_way_is_stopped_by_a_bad_setting(server):
    """Not our command (CrawlerProcess, Scrapyd's runner...): the project's add-on reads the config."""
    from scrapy.utils.test import get_crawler

    from civitai_spider.spiders.civitai import CivitaiSpider
    from tests.support import base_settings

    with pytest.raises(SettingError, match="CIVITAI_IMAGE_FORMAT must be one of original, jpeg, png, got 'webp'"):
        await get_crawler(CivitaiSpider, base_settings(server, CIVITAI_IMAGE_FORMAT="webp")).crawl()
    assert server.requests() == []


def test_scrapy_crawl_stops_before_anything_with_exit_status_2(server, tmp_path):
    done = run_scrapy("crawl", "civitai", "-s", f"CIVITAI_API_URL={server.api_url}",
                      "-s", f"IMAGES_STORE={tmp_path}", "-s", "CIVITAI_IMAGE_FORMAT=webp")
    assert done.returncode == 2
    assert "error: CIVITAI_IMAGE_FORMAT must be one of original, jpeg, png, got 'webp'" in done.stderr
    assert "Traceback" not in done.stderr
    assert server.requests() == []
