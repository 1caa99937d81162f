"""Every existing project gets production (keeping the project's client key), staging and
development; its existing API keys become production's."""

from django.db import migrations

ENVIRONMENTS = (
    ("production", "Production"),
    ("staging", "Staging"),
    ("development", "Development"),
)


def create_environments(apps, schema_editor):
    import secrets

    Project = apps.get_model("experiments", "Project")
    Environment = apps.get_model("experiments", "Environment")
    ApiKey = apps.get_model("experiments", "ApiKey")
    for project in Project.objects.all():
        for position, (key, name) in enumerate(ENVIRONMENTS):
            client_key = (
                project.client_key if key == "production" else "sdk-" + secrets.token_urlsafe(12)
            )
            Environment.objects.get_or_create(
                project=project,
                key=key,
                defaults={
                    "name": name,
                    "client_key": client_key,
                    "production": key == "production",
                    "position": position,
                },
            )
        production = Environment.objects.get(project=project, key="production")
        ApiKey.objects.filter(project=project, environment__isnull=True).update(
            environment=production
        )


class Migration(migrations.Migration):
    dependencies = [("experiments", "0004_project_require_approval_environment_and_more")]

    operations = [migrations.RunPython(create_environments, migrations.RunPython.noop)]
