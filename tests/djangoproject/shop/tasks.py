"""The project's tasks, imported by the pool master (``--import shop.tasks``) after Django's setup."""
import os

from django.db import connection

import fastsched
from shop.models import MasterConnection, Order, Shipment


def connection_id() -> "int | None":
    if connection.vendor != "mysql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


# The master queries as it imports this module: it holds an open Django connection when it forks
# its children, as a real project's import-time code often leaves it.
MasterConnection.objects.create(pid=os.getpid(), connection_id=connection_id())


@fastsched.task
def ship(order_id: int, note: str) -> None:
    order = Order.objects.get(pk=order_id)
    Shipment.objects.create(order=order, note=note, pid=os.getpid(), connection_id=connection_id())
