"""The Celery app for sites that push consent from several machines (copy it into your project).

django-klaviyo-consent enqueues through Django's Tasks framework; django-tasks-fennel turns
those enqueues into Celery messages, and this app is what ``celery worker`` runs. Settings come
from Django's settings with the ``CELERY_`` prefix (``CELERY_BROKER_URL`` ...); see
docs/delivery.md for the ``TASKS`` snippet. Run a worker with::

    DJANGO_SETTINGS_MODULE=example_project.settings celery -A example_project.celery worker -l INFO

Import it from the project package (``from .celery import app as celery_app`` in
``__init__.py``) so web processes send to the same broker; without that, django-tasks-fennel
falls back to its own app built from the same ``CELERY_`` settings.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
# Read CELERY_* from Django settings; the string form keeps worker children from pickling it.
app.config_from_object("django.conf:settings", namespace="CELERY")
# django.tasks enqueues to the queue named "default" unless a task says otherwise, and
# django-tasks-fennel routes each message to its task's queue: consume that one.
app.conf.task_default_queue = "default"
# Finds <app>.tasks in INSTALLED_APPS, i.e. klaviyo_consent.tasks.sync_outbox.
app.autodiscover_tasks()
