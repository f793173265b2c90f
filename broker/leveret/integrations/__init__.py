"""Glue for web frameworks, each an optional extra (``pip install 'leveret[django]'``).

- ``leveret.integrations.django``: ``send_on_commit`` sends a task once the surrounding
  transaction has committed, and nothing on rollback; the App comes from Django's
  ``LEVERET`` setting and the ``LEVERET_*`` environment.

Flask and FastAPI need no module of their own: a Flask view calls ``app.sync.send``; a
FastAPI lifespan opens and closes the async App (README, "From a Flask or FastAPI
service").
"""
