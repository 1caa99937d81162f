from django.apps import AppConfig


class FlagsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "flags"
    verbose_name = "Feature flags"

    def ready(self) -> None:
        from core.cache import invalidate_on_save

        # Flags and their per-environment rules: what the serving paths cache.
        invalidate_on_save(self)
