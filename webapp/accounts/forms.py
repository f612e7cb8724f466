from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError

from webapp.accounts import services
from webapp.accounts.models import User


class SignUpForm(UserCreationForm):
    """Django's sign-up form (password confirmation and validators); the user is created by
    ``services.sign_up``."""

    class Meta:
        model = User
        fields = ("username", "email")

    def save(self, commit: bool = True) -> Any:
        try:
            return services.sign_up(
                username=self.cleaned_data["username"],
                email=self.cleaned_data.get("email") or "",
                password=self.cleaned_data["password1"],
            )
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc
