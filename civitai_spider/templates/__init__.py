"""The gallery page's HTML, CSS and JavaScript, as package data (read with importlib.resources)."""
