"""Downloader middlewares: the API key at download time, and retries with backoff.

``ApiKeyMiddleware`` puts ``Authorization: Bearer <key>`` on an API page request
(one the spider marked ``API_PAGE`` in its meta, still bound for the API's origin)
while it is downloaded, and takes it off again on the way back, before any other
middleware (retry, redirect) can copy the request back to the scheduler: JOBDIR
and Redis pickle scheduled requests, so the key must never be on one. Image
requests never carry it, even when a proxy or a mirror serves both from one host.

``BackoffRetryMiddleware`` is Scrapy's ``RetryMiddleware`` (same settings, same
``retry/*`` stats) that waits before each retry: exponential backoff, or the
server's ``Retry-After`` when that is longer. An API page answered 200 with a
body that is not a page of images (a Cloudflare or maintenance HTML page) is
retried the same way (``retry/reason_count/api_invalid_json``); a good one is
parsed once, here, and handed to the spider in the request's meta (``PAGE``).
Each retry of an API page is one WARNING line (what failed, try n of m, the wait)
and the ``api_retrying`` signal (the progress line shows it until a page comes);
giving up is the spider's to report.
"""

from __future__ import annotations

import logging
from email.utils import parsedate_to_datetime
from time import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import sleep
from scrapy.utils.response import response_status_message

from civitai_spider import api
from civitai_spider.config import CivitaiConfig

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

#: Request meta key of the API page requests (the spider sets it): the only requests that get the key.
API_PAGE = "civitai_api_page"
#: Request meta key under which the retry middleware hands the parsed ``api.Page`` to the spider.
PAGE = "civitai_page"
#: Signal: an API page is retried in ``wait`` seconds (``text``: what failed, try n of m), or
#: ``text=None``: a page came.
api_retrying = object()


def failure_words(reason: str | Exception) -> str:
    """What went wrong, in words: "connection refused", "HTTP 503", "not JSON"..."""
    if isinstance(reason, str):
        return {"api_invalid_json": "an answer that is not JSON (an HTML error page?)"}.get(reason, reason)
    name = reason.__class__.__name__
    for key, words in (("ConnectionRefused", "connection refused"), ("DNSLookup", "the host name does not resolve"),
                       ("Timeout", "no answer in time"), ("TimedOut", "no answer in time"),
                       ("ConnectionLost", "connection dropped"), ("ConnectionDone", "connection closed"),
                       ("ResponseNeverReceived", "connection dropped before an answer"),
                       ("NoRoute", "no route to the host"), ("SSL", "a TLS error")):
        if key in name:
            return words
    return f"{name}: {reason}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class ApiKeyMiddleware:
    """Adds the Civitai API key to API page requests for the API's origin, and only to those."""

    def __init__(self, crawler: Crawler) -> None:
        config = CivitaiConfig.of(crawler)
        key = config.api_key
        if not key:  # the usual case, not a warning (a NotConfigured message would log one)
            logger.info("No CIVITAI_API_KEY: API requests are anonymous")
            raise NotConfigured
        self._authorization = f"Bearer {key}".encode()
        self._api_origin = _origin(config.api_url)
        crawler.stats.set_value("api/key_used", True)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ApiKeyMiddleware:
        return cls(crawler)

    def process_request(self, request: Request, spider: Any = None) -> None:
        if request.meta.get(API_PAGE) and _origin(request.url) == self._api_origin:
            request.headers[b"Authorization"] = self._authorization

    def process_response(self, request: Request, response: Response, spider: Any = None) -> Response:
        request.headers.pop(b"Authorization", None)
        return response

    def process_exception(self, request: Request, exception: Exception, spider: Any = None) -> None:
        request.headers.pop(b"Authorization", None)


def retry_after_seconds(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time() if now is None else now))


class BackoffRetryMiddleware(RetryMiddleware):
    """Scrapy's retry middleware, waiting ``backoff(n)`` or ``Retry-After`` before retry n."""

    def __init__(self, settings: BaseSettings) -> None:
        super().__init__(settings)
        config = CivitaiConfig.from_settings(settings)
        self.backoff_base = config.retry_backoff_base
        self.backoff_max = config.retry_backoff_max
        self.retry_after_max = config.retry_after_max

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        backoff = min(self.backoff_max, self.backoff_base * 2 ** (retry_number - 1))
        if retry_after is not None:
            return max(backoff, min(retry_after, self.retry_after_max))
        return backoff

    async def process_response(  # type: ignore[override]
        self, request: Request, response: Response, spider: Any = None
    ) -> Request | Response:
        if request.meta.get("dont_retry", False):
            return response
        if response.status in self.retry_http_codes:
            reason = response_status_message(response.status)
        elif response.status == 200 and request.meta.get(API_PAGE):
            try:
                request.meta[PAGE] = api.parse_page(response.body)
                self.crawler.signals.send_catch_log(api_retrying, text=None)
                return response
            except api.PageError:
                reason = "api_invalid_json"  # the spider reads the body again once the retries are spent
        else:
            return response
        retry = self._retry(request, reason)
        if retry is None:
            return response
        wait = self.delay(retry.meta["retry_times"], retry_after_seconds(response.headers.get("Retry-After")))
        self._tell(retry, f"HTTP {response.status}" if response.status != 200 else failure_words(reason), wait)
        self.crawler.stats.inc_value("retry/backoff_seconds", wait)
        await sleep(wait)
        return retry

    async def process_exception(  # type: ignore[override]
        self, request: Request, exception: Exception, spider: Any = None
    ) -> Request | None:
        if not isinstance(exception, self.exceptions_to_retry) or request.meta.get("dont_retry", False):
            return None
        retry = self._retry(request, exception)
        if retry is None:
            return None
        wait = self.delay(retry.meta["retry_times"])
        self._tell(retry, failure_words(exception), wait)
        self.crawler.stats.inc_value("retry/backoff_seconds", wait)
        await sleep(wait)
        return retry

    def _tell(self, retry: Request, what: str, wait: float) -> None:
        """An API page's retry, said as it happens: a WARNING line and the ``api_retrying`` signal."""
        if not retry.meta.get(API_PAGE):
            return
        tries = retry.meta.get("max_retry_times", self.max_retry_times) + 1
        text = (f"API page {retry.meta.get('page', 1)} of chain {retry.meta.get('chain')}: {what}; "
                f"try {retry.meta['retry_times'] + 1} of {tries}")
        logger.warning("%s in %.0f s (%s)", text, wait, _origin_text(retry.url))
        self.crawler.signals.send_catch_log(api_retrying, text=text, wait=wait)


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}" + (f":{port}" if port else "")
