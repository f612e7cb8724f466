"""``manage.py register_model NAME PATH_OR_HF_ID [--engine hf] [--revision REV] [--queue Q]``.

``--tiny`` builds the offline tiny model (``interventions.tiny.build_tiny``) and registers it,
without a path. Thin: parsing and printing only; ``services.register_deployment`` does the work.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.library.models import Engine
from webapp.library.services import register_deployment


class Command(BaseCommand):
    help = "Register a model deployment, reading its shape from the model's config."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="deployment name (slug-like, e.g. tiny or qwen2-0-5b)")
        parser.add_argument("source", nargs="?", default=None, help="Hugging Face id or local path")
        parser.add_argument("--engine", choices=Engine.values, default="hf")
        parser.add_argument("--revision", default="", help="model revision (branch, tag or commit)")
        parser.add_argument(
            "--queue", default="", help="Celery queue of the model's workers (default model.NAME)"
        )
        parser.add_argument(
            "--tiny", action="store_true", help="build the offline tiny model and register it"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source: str | None = options["source"]
        if options["tiny"]:
            if source is not None:
                raise CommandError("--tiny builds its own model: do not pass a path or HF id as well")
            from interventions.tiny import build_tiny

            source = str(build_tiny())
        if source is None:
            raise CommandError("give a Hugging Face id or a local path (or --tiny)")
        try:
            deployment = register_deployment(
                options["name"],
                source,
                revision=options["revision"],
                engine=options["engine"],
                queue_name=options["queue"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            f"registered {deployment.name}: {deployment.model_type}, {deployment.num_layers} layers, "
            f"hidden {deployment.hidden_size}, mlp {deployment.mlp_size}, vocab {deployment.vocab_size}, "
            f"engine {deployment.engine}, queue {deployment.queue_name}"
        )
