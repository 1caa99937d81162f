from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.cache import invalidate_on_save

        # Keys, projects, environments, experiments, segments: what the serving paths cache.
        invalidate_on_save(self)
