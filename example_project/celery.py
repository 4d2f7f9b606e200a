"""The Celery app for sites that push consent from several machines (copy it into your project).

django-klaviyo-consent's Celery tasks live in ``klaviyo_consent.celery`` (a ``shared_task`` for
the push and one for checkpoints, and a beat schedule); the site enqueues the push on commit
with ``KLAVIYO_CONSENT["ENQUEUE_PUSH"] = "klaviyo_consent.celery.enqueue_push"``. Settings come
from Django's settings with the ``CELERY_`` prefix (``CELERY_BROKER_URL`` ...); see
docs/delivery.md. Run a worker (and beat) with::

    DJANGO_SETTINGS_MODULE=example_project.settings \
        celery -A example_project.celery worker -B -l INFO

Import it from the project package (``from .celery import app as celery_app`` in
``__init__.py``) so web processes send to the same broker.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
# Read CELERY_* from Django settings; the string form keeps worker children from pickling it.
app.config_from_object("django.conf:settings", namespace="CELERY")
# The site's own <app>.tasks, and the consent app's Celery tasks (klaviyo_consent.celery).
app.autodiscover_tasks()
app.autodiscover_tasks(["klaviyo_consent"], related_name="celery")
