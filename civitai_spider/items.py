"""The image item: one per Civitai image, with the API's fields.

A ``scrapy.Item`` so that feed exports and scrapy-fieldstats see every field,
present or not.
"""

from __future__ import annotations

import scrapy

from civitai_spider.api import API_FIELDS  # noqa: F401 (the fields below; imported from here too)


class CivitaiImage(scrapy.Item):
    id = scrapy.Field()
    url = scrapy.Field()
    hash = scrapy.Field()
    width = scrapy.Field()
    height = scrapy.Field()
    nsfwLevel = scrapy.Field()
    nsfw = scrapy.Field()
    browsingLevel = scrapy.Field()
    type = scrapy.Field()
    createdAt = scrapy.Field()
    postId = scrapy.Field()
    username = scrapy.Field()
    baseModel = scrapy.Field()
    baseModelType = scrapy.Field()
    modelVersionIds = scrapy.Field()
    stats = scrapy.Field()
    meta = scrapy.Field()
    # API fields not in API_FIELDS, as given (a field Civitai added later): kept in N.json.
    extra = scrapy.Field()
    # Which query (cursor chain) yielded the image, e.g. "username=alice".
    query = scrapy.Field()
    # ImagesPipeline input and output.
    image_urls = scrapy.Field()
    images = scrapy.Field()
