from typing import Any

from django.apps import AppConfig


def _project_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kw: Any) -> None:
    if created and not raw:
        from assignments.services.retention import project_partitions_prepare

        project_partitions_prepare(project_id=instance.pk, using=kw.get("using") or "default")


def _project_deleting(sender: Any, instance: Any, **kw: Any) -> None:
    from assignments.services.retention import project_partitions_forget

    project_partitions_forget(project_id=instance.pk, using=kw.get("using") or "default")


class AssignmentsConfig(AppConfig):
    name = "assignments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """A project's event partitions (PostgreSQL) come and go with it, however it is made or
        deleted (services, the admin, factories): experiments, a layer below, imports nothing
        from here, so this layer subscribes to the project's own signals
        (assignments/services/retention.py)."""
        from django.db.models.signals import post_save, pre_delete

        from experiments.models import Project

        post_save.connect(_project_saved, sender=Project, dispatch_uid="assignments.partitions")
        pre_delete.connect(_project_deleting, sender=Project, dispatch_uid="assignments.partitions")
