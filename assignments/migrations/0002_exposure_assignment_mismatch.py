from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="exposure",
            name="assignment_mismatch",
            field=models.BooleanField(default=False),
        ),
    ]
