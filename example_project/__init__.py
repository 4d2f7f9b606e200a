"""The example site. Its Celery app is loaded when Celery is installed (see docs/delivery.md)."""

try:
    from example_project.celery import app as celery_app
except ImportError:  # Celery is optional: the demo runs on the immediate task backend
    celery_app = None

__all__ = ["celery_app"]
