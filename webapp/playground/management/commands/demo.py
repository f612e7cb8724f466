"""``manage.py demo [--host 127.0.0.1] [--port 8000] [--no-serve]``: what ``make demo`` runs.

Migrates the database, registers the model (the offline tiny model, or ``$STEERLAB_MODEL``: a
Hugging Face id or a local path), makes sure a ``demo`` user (password ``$STEERLAB_DEMO_PASSWORD``,
default ``steerlab-demo``) has the example recipe and a conversation using it, prints one line
with the URL and the login, and serves the ASGI app in this process with uvicorn. Without
``CELERY_BROKER_URL`` runs execute in this process too (the embedded default).

Thin: every step is a service; running it again reuses what the previous run created.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

DEMO_USERNAME = "demo"
DEFAULT_PASSWORD = "steerlab-demo"


def deployment_slug(source: str) -> str:
    """A deployment name for a model id or path: ``Qwen/Qwen2.5-0.5B`` -> ``qwen2-5-0-5b``."""
    slug = re.sub(r"[^a-z0-9]+", "-", PurePath(source.rstrip("/")).name.lower()).strip("-")
    return slug[:64].strip("-") or "model"


class Command(BaseCommand):
    help = "Set up the demo (database, model, demo user, example recipe, conversation) and serve it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
        parser.add_argument("--no-serve", action="store_true", help="set everything up, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        password = os.environ.get("STEERLAB_DEMO_PASSWORD", "").strip() or DEFAULT_PASSWORD
        conversation = self.set_up(password)
        if options["no_serve"]:
            self.stdout.write(
                f"Steerlab demo is set up: conversation {conversation.pk} "
                f"(login: {DEMO_USERNAME} / {password}); run without --no-serve to serve it."
            )
            return
        host, port = options["host"], options["port"]
        self.stdout.write(f"Steerlab demo: http://{host}:{port}/  (login: {DEMO_USERNAME} / {password})")
        self.stdout.flush()

        import uvicorn

        uvicorn.run(
            "webapp.asgi:application", host=host, port=port, ws="websockets-sansio", log_level="warning"
        )

    def set_up(self, password: str) -> Any:
        from webapp.accounts.models import User
        from webapp.library.models import Dataset, Recipe
        from webapp.library.services import register_deployment
        from webapp.playground import services
        from webapp.playground.examples import create_example_datasets, create_example_recipe
        from webapp.playground.models import Conversation

        source = os.environ.get("STEERLAB_MODEL", "").strip()
        if source:
            name = deployment_slug(source)
        else:
            from interventions.tiny import build_tiny

            name, source = "tiny", str(build_tiny())
        try:
            deployment = register_deployment(name, source)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc

        with transaction.atomic():
            user = User.objects.filter(username=DEMO_USERNAME).first()
            if user is None:
                user = User.objects.create_user(username=DEMO_USERNAME, password=password)
            elif not user.check_password(password):
                user.set_password(password)  # the printed password is always the one that works
                user.save(update_fields=["password"])

            recipe = Recipe.objects.filter(owner=user, deployment=deployment).order_by("id").first()
            version = recipe.latest_version() if recipe is not None else None
            if version is None:
                version = create_example_recipe(user, deployment)
            if not Dataset.objects.filter(owner=user).exists():
                create_example_datasets(user)

            conversation = (
                Conversation.objects.filter(owner=user, deployment=deployment, recipe_version=version)
                .order_by("id")
                .first()
            )
            if conversation is None:
                conversation = services.create_conversation(
                    user, deployment, recipe_version=version, title="Demo"
                )
        return conversation
