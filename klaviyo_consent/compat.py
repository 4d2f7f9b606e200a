"""Version compatibility: where Django's Tasks framework lives on each supported Django.

``django.tasks`` is built in on Django 6; on 5.2 the ``django-tasks`` backport provides the
same API. ``TASKS_MODULE`` is safe to import from a settings module (for ``TASKS`` paths).
"""

from __future__ import annotations

import django

#: Where Django's Tasks framework lives, for ``TASKS`` backend paths.
TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"

if django.VERSION >= (6, 0):
    from django.tasks import task
    from django.tasks.backends.immediate import ImmediateBackend
else:  # pragma: no cover - Django 5.2
    from django_tasks import task
    from django_tasks.backends.immediate import ImmediateBackend

__all__ = ["TASKS_MODULE", "ImmediateBackend", "task"]
