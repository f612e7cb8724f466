"""Steerlab's worker side: the Celery app, thin tasks and engine hosting."""
