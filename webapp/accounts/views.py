"""Server-rendered account pages: thin wrappers over Django's auth views and the services."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods

from webapp.accounts import services
from webapp.accounts.forms import SignUpForm


@require_http_methods(["GET", "POST"])
def sign_up_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("app")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = form.save()
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("app")
    return render(request, "accounts/signup.html", {"form": form})


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change, which also revokes every API token of the user (the page says so)."""

    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("accounts:password_change_done")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        services.revoke_all_api_tokens(form.user)
        return response


@login_required
def home_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    teams = services.teams_of(user)
    return render(request, "accounts/home.html", {"teams": teams})


@login_required
@require_http_methods(["GET", "POST"])
def accept_invitation_view(request: HttpRequest, token: str) -> HttpResponse:
    """The invitation link: GET asks for confirmation, POST joins the team."""
    if request.method == "POST":
        try:
            membership = services.accept_invitation(request.user, token)
        except ValidationError as exc:
            return render(request, "accounts/invitation.html", {"error": exc.messages[0]}, status=400)
        return render(request, "accounts/invitation.html", {"joined": membership.team})
    return render(request, "accounts/invitation.html", {})
