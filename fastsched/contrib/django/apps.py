"""The Django app of fastsched (``INSTALLED_APPS = [..., "fastsched.contrib.django"]``)."""
from __future__ import annotations

from django.apps import AppConfig


class FastschedConfig(AppConfig):
    name = "fastsched.contrib.django"
    label = "fastsched"
    verbose_name = "fastsched job queue"

    def ready(self) -> None:
        import fastsched
        from fastsched.contrib.django import close_inherited_connections

        # Registered once per process (the registry ignores the same function twice): every pool
        # child started from this project drops the master's connections before its first job.
        fastsched.on_child_start(close_inherited_connections)
