from __future__ import annotations

import logging

from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "webapp.operations"
    label = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.conf import settings

        if settings.STEERLAB_LOG_FORMAT == "json":
            # Python's warnings as log records too (logger "py.warnings"): one JSON object per line.
            logging.captureWarnings(True)
