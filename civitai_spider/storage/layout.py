"""The names of a harvest's files, at the top of its store: what the spider writes and the
gallery (or any reader of a harvest) reads. Plain names, no Scrapy (store processes import it).

For an image ``N``: ``N.<ext>`` (the image or video), ``N.json`` (its record: what the API
said and what was stored, written last), ``N_pos-prompt.txt``,
``N_neg-prompt.txt``, ``N_meta.json``, ``N.txt`` (a caption, when asked for), and
``thumbs/<set>/N.jpg``; for the store: ``downloaded_ids.txt`` and ``failures.jsonl``; for
update runs, per query: ``seen/<query name>.ids``.
"""

from __future__ import annotations

DONE_FILE = "downloaded_ids.txt"  # the original script's name and format: one id a line
FAILURES_FILE = "failures.jsonl"
POS_PROMPT = "_pos-prompt"  # N_pos-prompt.txt
NEG_PROMPT = "_neg-prompt"  # N_neg-prompt.txt
META = "_meta"  # N_meta.json


def pos_prompt_file(stem: str) -> str:
    return f"{stem}{POS_PROMPT}.txt"


def neg_prompt_file(stem: str) -> str:
    return f"{stem}{NEG_PROMPT}.txt"


def meta_file(stem: str) -> str:
    return f"{stem}{META}.json"


def record_file(stem: str) -> str:
    """The image's record (``metadata_files.image_record``): the one file that describes it whole."""
    return f"{stem}.json"


def caption_file(stem: str) -> str:
    return f"{stem}.txt"


def thumb_file(thumb_set: str, stem: str) -> str:
    return f"thumbs/{thumb_set}/{stem}.jpg"


def seen_file(query_name: str) -> str:
    """The ids update runs of one query saw (``arguments.CrawlArguments.seen_name``)."""
    return f"seen/{query_name}.ids"
