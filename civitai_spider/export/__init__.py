"""From a harvest to a training set: ``python -m civitai_spider.export FORMAT STORE OUT``.

Reads a store (a folder, ``s3://`` or ``gs://``; every image's record ``N.json``
and its file) and writes ``parquet`` (one row per image), ``webdataset`` (tar
shards) or ``imagefolder`` (the images and a ``metadata.jsonl``), as the
training tools load them. Modules, one stage each: ``source`` (listing and
reading a store), ``samples`` (an image's row, caption and bytes), ``resize``,
``run`` (the loop), one per format (``parquet``, ``webdataset``,
``imagefolder``, on ``output``'s build-then-rename), and ``cli``.
"""
