"""Steerlab's typed HTTP API (django-ninja), mounted at ``/api/``; its OpenAPI is committed as
``webapp/api/openapi.json`` for the front end's generated types."""
