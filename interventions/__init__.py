"""Steerlab's pure intervention library: torch + pydantic, never Django/Celery/Channels/vLLM."""
