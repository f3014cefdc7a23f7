"""``python -m civitai_spider.export FORMAT STORE OUT``: see ``civitai_spider.export.cli``."""

import sys

from civitai_spider.export.cli import main

sys.exit(main())
