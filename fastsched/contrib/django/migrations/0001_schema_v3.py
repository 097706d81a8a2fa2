"""fastsched's tables at schema version 3 (or an older fastsched schema migrated to it).

A release that bumps ``fastsched.backends.base.SCHEMA_VERSION`` adds the next migration,
``000N_schema_v<version>.py``, with the same operation: the tests check that the last one names
the current version.
"""
from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations

from fastsched.contrib.django.schema import migrate


class Migration(migrations.Migration):
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    # Kept on `migrate fastsched zero`: the tables hold jobs, which are never dropped behind your back.
    operations: ClassVar[list[Any]] = [migrations.RunPython(migrate, migrations.RunPython.noop, elidable=False)]
