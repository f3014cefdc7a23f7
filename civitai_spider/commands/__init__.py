"""Project commands (``COMMANDS_MODULE``): ``crawl`` with spider arguments checked first."""
