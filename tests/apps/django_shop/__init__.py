"""A small Django project on PostgreSQL that sends a task when an order is placed.

``settings_for`` gives its settings for a database URL and a schema; ``views.place_order``
is what a service would write: the row and the task in one transaction.
"""
