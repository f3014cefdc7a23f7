"""The image item: one per Civitai image, with the API's fields.

A ``scrapy.Item`` so that feed exports and scrapy-fieldstats see every field,
present or not.
"""

from __future__ import annotations

import scrapy

#: The API item fields copied onto the item as given (``meta`` is normalised).
API_FIELDS = (
    "id",
    "url",
    "hash",
    "width",
    "height",
    "nsfwLevel",
    "nsfw",
    "browsingLevel",
    "type",
    "createdAt",
    "postId",
    "username",
    "baseModel",
    "baseModelType",
    "modelVersionIds",
    "stats",
    "meta",
)


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
    # Which query (cursor chain) yielded the image, e.g. "username=alice".
    query = scrapy.Field()
    # ImagesPipeline input and output.
    image_urls = scrapy.Field()
    images = scrapy.Field()
