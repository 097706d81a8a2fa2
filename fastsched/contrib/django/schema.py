"""The fastsched tables through Django's migration: the same schema files and steps as
``fastsched-pool init`` runs, on the migration's connection and in its transaction."""
from __future__ import annotations

from typing import Any

from fastsched.backends import open_backend


def migrate(apps: Any, schema_editor: Any) -> None:
    """RunPython: create the schema, or migrate an older one, on the queue's database only."""
    from fastsched.contrib.django import database_alias, dsn_from_database

    connection = schema_editor.connection
    if connection.alias != database_alias():
        return  # `migrate --database other`: fastsched's tables live on FASTSCHED_DATABASE alone
    backend = open_backend(dsn_from_database(connection.settings_dict, connection.alias))  # never connects
    with connection.cursor() as cursor:
        backend.upgrade_schema(cursor)
