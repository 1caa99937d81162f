"""People's API tokens move from Django REST framework's authtoken (stored in clear) to
django-rest-knox (a SHA-512 digest and an expiry); the demo login stops being a superuser.

Existing tokens keep working: each is stored as knox stores its own (digest of the key, the
key's first 15 characters to find it), expiring after REST_KNOX["TOKEN_TTL"], and the clear
copies are deleted. The `demo` user that older `make run`s seeded as a superuser with a
published password is demoted; outside a demo install (ABACUS_DEMO off) it also loses that
password.
"""

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import migrations
from django.utils import timezone

DEMO_USER = "demo"
DEMO_PASSWORD = "abacus-demo"


def hash_clear_tokens(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS, knox_settings

    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")  # noqa: N806
    ttl = knox_settings.TOKEN_TTL
    expiry = timezone.now() + ttl if ttl else None
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id FROM authtoken_token")
        rows = cursor.fetchall()
        for key, user_id in rows:
            AuthToken.objects.create(
                digest=hash_token(key),
                token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH],
                user_id=user_id,
                expiry=expiry,
            )
        cursor.execute("DELETE FROM authtoken_token")


def demote_demo_user(apps, schema_editor):
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    User = apps.get_model(app_label, model_name)  # noqa: N806
    user = User.objects.filter(username=DEMO_USER).first()
    if user is None or not check_password(DEMO_PASSWORD, user.password):
        return
    user.is_superuser = False
    user.is_staff = False
    if not getattr(settings, "ABACUS_DEMO", False):
        user.password = make_password(None)  # unusable
    user.save(update_fields=["is_superuser", "is_staff", "password"])


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0002_definition_constraints"),
        ("knox", "0009_extend_authtoken_field"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(hash_clear_tokens, migrations.RunPython.noop),
        migrations.RunPython(demote_demo_user, migrations.RunPython.noop),
    ]
