"""Packaging for deployment: the egg that ``scrapyd-deploy`` and ``shub deploy`` build.

Kept as minimal as the one ``scrapyd-deploy`` would generate. The egg carries the
``civitai_spider`` package only, with the gallery page's HTML, CSS and JavaScript as
package data (read with ``importlib.resources``, which works from the zipped egg too);
its dependencies are NOT declared here: install them on the Scrapyd host with
``pip install -r requirements.txt`` (Zyte installs them from ``scrapinghub.yml``'s
``requirements``).
"""

from setuptools import find_packages, setup

setup(
    name="civitai-spider",
    version="0.1",
    python_requires=">=3.11",  # tested on 3.11 (README); datetime.UTC and other 3.11 names are used
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"]),
    package_data={"civitai_spider.templates": ["*.html", "*.css", "*.js"]},
    entry_points={"scrapy": ["settings = civitai_spider.settings"]},
    zip_safe=False,
)
