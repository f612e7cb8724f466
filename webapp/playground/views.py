"""Server-rendered playground pages (a minimal chat until the browser app lands).

``/playground/`` lists the user's conversations and starts new ones; ``/playground/<id>/`` is the
chat page, which talks to ``/ws/conversations/<id>/`` (``static/playground/chat.js``). Thin: the
rules are the services'.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from webapp.library.models import ModelDeployment, Recipe
from webapp.library.services import visible_to
from webapp.playground import services
from webapp.playground.models import Conversation
from webapp.playground.services import PlaygroundError

RECENT_RUNS = 50  # the chat page shows this many of a conversation's latest runs


def _choices(user: Any) -> tuple[list[ModelDeployment], list[dict[str, Any]]]:
    """Deployments, and the latest version of every recipe ``user`` may see."""
    deployments = list(ModelDeployment.objects.order_by("name"))
    recipes = visible_to(user, Recipe.objects.select_related("deployment", "owner")).order_by(
        "deployment__name", "name"
    )
    versions = []
    for recipe in recipes:
        version = recipe.latest_version()
        if version is not None:
            versions.append({"recipe": recipe, "version": version})
    return deployments, versions


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@login_required
@require_http_methods(["GET", "POST"])
def index_view(request: HttpRequest) -> HttpResponse:
    """The user's conversations, and a form to start one (a model and an optional recipe)."""
    user = request.user
    deployments, versions = _choices(user)
    error = ""
    if request.method == "POST":
        deployment = next((d for d in deployments if d.pk == _int(request.POST.get("deployment"))), None)
        version_id = _int(request.POST.get("recipe_version"))
        try:
            if deployment is None:
                raise PlaygroundError("invalid", "Pick a model.")
            version = None if version_id is None else services.get_recipe_version(user, version_id)
            conversation = services.create_conversation(
                user, deployment, recipe_version=version, title=request.POST.get("title", "")
            )
        except PlaygroundError as exc:
            error = exc.message
        else:
            return redirect("playground:chat", conversation_id=conversation.pk)
    conversations = Conversation.objects.filter(owner=user).select_related(
        "deployment", "recipe_version__recipe"
    )
    return render(
        request,
        "playground/index.html",
        {
            "conversations": conversations,
            "deployments": deployments,
            "versions": versions,
            "error": error,
        },
        status=400 if error else 200,
    )


@login_required
def chat_view(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The chat page of one of the user's own conversations (anyone else's: 404)."""
    try:
        conversation = services.get_conversation(request.user, conversation_id)
    except PlaygroundError:
        raise Http404("No such conversation.") from None
    runs = list(
        conversation.runs.select_related("prompt_message")
        .filter(user=request.user)
        .order_by("-id")[:RECENT_RUNS]
    )
    version = conversation.recipe_version
    page = {
        "conversation": conversation.pk,
        "socket": f"/ws/conversations/{conversation.pk}/",
        "interventions": (version.spec or {}).get("interventions", []) if version is not None else [],
        "recipe": str(version) if version is not None else None,
        "turns": [
            {
                "message": run.prompt_message_id,
                "prompt": run.prompt_message.content,
                "run": services.run_summary(run),
            }
            for run in reversed(runs)
        ],
    }
    return render(request, "playground/chat.html", {"conversation": conversation, "page": page})
