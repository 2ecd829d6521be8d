"""tracking=none: runs leave their run directory (config.yaml, metrics.json, params.json, plots,
...) and nothing else: no store, no MLflow import. For notebooks, tests and machines without a
place to log to. A sweep's aggregate is computed from its run directories."""
from __future__ import annotations

from runner.tracking.base import Tracking


class NoTracking(Tracking):
    def __init__(self, **settings):
        self.settings = settings  # accepted and ignored: the keys of another backend's config
