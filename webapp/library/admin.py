"""Admin for the library. Recipe versions are read-only: they are immutable."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from webapp.library.models import (
    Dataset,
    ModelDeployment,
    Probe,
    Recipe,
    RecipeVersion,
    RecipeVersionRef,
    SteeringVector,
)

_OWNED_FILTERS = ("visibility", "team")


class _NoAddMixin:
    """Objects made by services (register_model, uploads, forks): the admin inspects and edits them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(_NoAddMixin, admin.ModelAdmin):
    list_display = ("name", "hf_id_or_path", "revision", "engine", "num_layers", "hidden_size", "queue_name")
    list_filter = ("engine",)
    search_fields = ("name", "hf_id_or_path")
    # The shape comes from the model's config (register_model): hand-edits would orphan stored tensors.
    readonly_fields = ("model_type", "hidden_size", "num_layers", "mlp_size", "vocab_size", "created_at")


@admin.register(SteeringVector)
class SteeringVectorAdmin(_NoAddMixin, admin.ModelAdmin):
    list_display = ("name", "deployment", "owner", "team", "visibility", "method", "created_at")
    list_filter = ("deployment", *_OWNED_FILTERS, "method")
    search_fields = ("name", "description", "content_hash", "owner__username")
    raw_id_fields = ("owner", "team", "forked_from")
    readonly_fields = ("layers", "hidden_size", "content_hash", "created_at", "updated_at")


@admin.register(Probe)
class ProbeAdmin(_NoAddMixin, admin.ModelAdmin):
    list_display = ("name", "deployment", "layer", "point", "owner", "team", "visibility", "created_at")
    list_filter = ("deployment", *_OWNED_FILTERS, "point")
    search_fields = ("name", "description", "content_hash", "owner__username")
    raw_id_fields = ("owner", "team", "forked_from")
    readonly_fields = ("layer", "point", "width", "bias", "content_hash", "created_at", "updated_at")


@admin.register(Dataset)
class DatasetAdmin(_NoAddMixin, admin.ModelAdmin):
    list_display = ("name", "kind", "row_count", "owner", "team", "visibility", "created_at")
    list_filter = ("kind", *_OWNED_FILTERS)
    search_fields = ("name", "description", "owner__username")
    raw_id_fields = ("owner", "team", "forked_from")
    readonly_fields = ("kind", "rows", "row_count", "content_hash", "created_at", "updated_at")


class RecipeVersionInline(admin.TabularInline):
    model = RecipeVersion
    extra = 0
    fields = ("number", "created_by", "created_at", "spec")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Recipe)
class RecipeAdmin(admin.ModelAdmin):
    list_display = ("name", "deployment", "owner", "team", "visibility", "updated_at")
    list_filter = ("deployment", *_OWNED_FILTERS)
    search_fields = ("name", "description", "owner__username")
    raw_id_fields = ("owner", "team", "forked_from_version")
    inlines = (RecipeVersionInline,)


class RecipeVersionRefInline(admin.TabularInline):
    model = RecipeVersionRef
    extra = 0
    fields = ("ref", "vector", "probe")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RecipeVersion)
class RecipeVersionAdmin(admin.ModelAdmin):
    list_display = ("recipe", "number", "created_by", "created_at")
    search_fields = ("recipe__name",)
    readonly_fields = ("recipe", "number", "spec", "content_hashes", "created_by", "created_at")
    inlines = (RecipeVersionRefInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions are created by create_recipe_version, which validates them

    def has_change_permission(self, request: HttpRequest, obj: RecipeVersion | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RecipeVersion | None = None) -> bool:
        return False
