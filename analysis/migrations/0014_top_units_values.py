from django.db import migrations, models


def set_anew(apps, schema_editor):
    """The kept top units have no values yet: emptied, and their thresholds forgotten, so that
    the next snapshot of each experiment sets them anew (one scan of its rows)."""
    apps.get_model("analysis", "UnitAggregateTop").objects.all().delete()
    apps.get_model("analysis", "AggregateState").objects.update(thresholds={})


class Migration(migrations.Migration):
    dependencies = [("analysis", "0013_pre_start_count")]

    operations = [
        migrations.AddField(
            model_name="unitaggregatetop",
            name="variant_id",
            field=models.BigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="unitaggregatetop", name="v", field=models.FloatField(null=True)
        ),
        migrations.AddField(
            model_name="unitaggregatetop", name="x", field=models.FloatField(null=True)
        ),
        migrations.RunPython(set_anew, set_anew),
    ]
