from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "analysis"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from analysis.incremental import forget_deleted_events
        from assignments.signals import events_deleted

        events_deleted.connect(forget_deleted_events, dispatch_uid="analysis.incremental")
