"""The project's own signals (``crawler.signals``), sent by the spider for the components
that keep state beside the walk: JOBDIR chain state, and a shared crawl's leases and records.

- ``chains_changed()``: ``spider.state["chains"]`` holds new positions (``extensions.chain_state``
  writes them to JOBDIR).
- ``page_finished(request, complete, ids)``: every image of the page fetched by ``request`` has
  left the pipelines (a page with none: as soon as its next page is asked for), and the crawl
  goes on; ``complete`` is False when one of them failed (a JOBDIR resume walks that page
  again); ``ids``: the page's images that matched its query, in page order. Not sent for a page
  whose images were left behind by a stopping crawl.
- ``chain_ended(chain, status)``: the chain ``chain`` (its key) ended: ``complete``, ``loop``,
  ``early_stop``, ``caught_up`` (an update run reached what earlier ones saw) or ``failed``.
  A failed page is also ``page_finished`` (not complete), but for one whose API key was
  refused: another process's key may work.
- ``walk_finished(statuses)``: a shared crawl is finished; ``statuses``: each chain's end, as
  the workers recorded it (the worker that ended a chain may be another one).
"""

chains_changed = object()
page_finished = object()
chain_ended = object()
walk_finished = object()
