"""Errors a user can cause. The CLI prints them as one line and exits 2."""


class ConfigError(Exception):
    """A configuration or input problem found before (or instead of) a fit."""
