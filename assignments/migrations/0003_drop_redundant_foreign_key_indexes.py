# The foreign keys that lead a composite index need no index of their own: each index slows every
# insert on the hot path, and the experiment_id one drew the planner away from the unique
# (experiment, unit_id) index while statistics were stale. Only the indexes are dropped; the
# constraints stay as they are (no re-validation of large tables).

import django.db.models.deletion
from django.db import migrations, models

INDEXES = (
    "assignments_assignment_experiment_id_d555314a",
    "assignments_exposure_experiment_id_d6961d64",
    "assignments_exposure_project_id_a53f9a1a",
    "assignments_metricevent_project_id_645378e7",
)


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0002_exposure_assignment_mismatch"),
        ("experiments", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"', reverse_sql=migrations.RunSQL.noop
                )
                for name in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="assignment",
                    name="experiment",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="assignments",
                        to="experiments.experiment",
                    ),
                ),
                migrations.AlterField(
                    model_name="exposure",
                    name="experiment",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="exposures",
                        to="experiments.experiment",
                    ),
                ),
                migrations.AlterField(
                    model_name="exposure",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="experiments.project",
                    ),
                ),
                migrations.AlterField(
                    model_name="metricevent",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="experiments.project",
                    ),
                ),
            ],
        ),
    ]
