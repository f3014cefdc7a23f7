"""Packaging for deployment: the egg that ``scrapyd-deploy`` and ``shub deploy`` build.

Kept as minimal as the one ``scrapyd-deploy`` would generate. The egg carries the
``civitai_spider`` package only; its dependencies are NOT declared here: install them
on the Scrapyd host with ``pip install -r requirements.txt`` (Zyte installs them from
``scrapinghub.yml``'s ``requirements``). The project reads no data file of its own at
run time, so there is no package data.
"""

from setuptools import find_packages, setup

setup(
    name="civitai-spider",
    version="0.1",
    python_requires=">=3.11",  # tested on 3.11 (README); datetime.UTC and other 3.11 names are used
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"]),
    entry_points={"scrapy": ["settings = civitai_spider.settings"]},
    zip_safe=False,
)
