"""Settings checked before the crawl: a bad value is one ``error:`` line and exit status 2."""

from __future__ import annotations

import pytest
from scrapy.settings import Settings

from civitai_spider import settings as project_defaults
from civitai_spider.setting_checks import SettingError, check_settings, choice
from tests.support import run_scrapy


def settings(**values: object) -> Settings:
    built = Settings()
    built.setmodule(project_defaults, priority="project")
    built.setdict(values, priority="cmdline")
    return built


def test_the_defaults_pass():
    check_settings(settings(), project_defaults)


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
        check_settings(settings(**{name: value}), project_defaults)
    assert str(raised.value) == message


def test_good_values_in_other_spellings_pass():
    check_settings(settings(CIVITAI_PROGRESS="LOG", CIVITAI_CAPTION_FILES="1", CIVITAI_JPEG_QUALITY="90",
                            CIVITAI_STATE_SAVE_INTERVAL="2"), project_defaults)
    assert choice(settings(CIVITAI_IMAGE_FORMAT=" PNG "), "CIVITAI_IMAGE_FORMAT") == "png"


def test_scrapy_crawl_stops_before_anything_with_exit_status_2(server, tmp_path):
    done = run_scrapy("crawl", "civitai", "-s", f"CIVITAI_API_URL={server.api_url}",
                      "-s", f"IMAGES_STORE={tmp_path}", "-s", "CIVITAI_IMAGE_FORMAT=webp")
    assert done.returncode == 2
    assert "error: CIVITAI_IMAGE_FORMAT must be one of original, jpeg, png, got 'webp'" in done.stderr
    assert "Traceback" not in done.stderr
    assert server.requests() == []
