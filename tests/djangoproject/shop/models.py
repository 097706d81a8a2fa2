from django.db import models


class Order(models.Model):
    note = models.CharField(max_length=50)


class Shipment(models.Model):
    """Written by the ship task, in a pool child."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    note = models.CharField(max_length=50)
    pid = models.IntegerField()
    connection_id = models.BigIntegerField(null=True)  # the MySQL connection the child's ORM used


class MasterConnection(models.Model):
    """Written by the master as it imports shop.tasks: the connection its children inherit."""

    pid = models.IntegerField()
    connection_id = models.BigIntegerField(null=True)
