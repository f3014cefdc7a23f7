"""The project's own signals (``crawler.signals``), sent by the spider for the components
that keep state beside the walk: JOBDIR chain state, and a shared crawl's leases and records.

- ``chains_changed()``: ``spider.state["chains"]`` holds new positions (``extensions.chain_state``
  writes them to JOBDIR).
- ``page_finished(request, complete)``: every image of the page fetched by ``request`` has left
  the pipelines (a page with none: as soon as its next page is asked for), and the crawl goes on;
  ``complete`` is False when one of them failed (a JOBDIR resume walks that page again).
  Not sent for a page whose images were left behind by a stopping crawl.
- ``chain_ended(chain, status)``: the chain ``chain`` (its key) ended: ``complete``, ``loop``,
  ``early_stop`` or ``failed``. A failed page is also ``page_finished`` (not complete), but for
  one whose API key was refused: another process's key may work.
"""

chains_changed = object()
page_finished = object()
chain_ended = object()
