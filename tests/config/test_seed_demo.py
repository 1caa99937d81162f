"""The demo login (published password) exists only on demo installs and is never a superuser."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from config.management.commands.seed_demo import (
    DEMO_PASSWORD,
    DEMO_USER,
    demo_user_ensure,
)
from experiments.models import Membership, Role
from experiments.services import project_create

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _abacus_demo(tmp_path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ABACUS_DEMO")}
    clean.update(ABACUS_VAR_DIR=str(tmp_path), **env)
    code = "from django.conf import settings; print(settings.ABACUS_DEMO)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_the_demo_is_on_only_for_the_embedded_default_or_when_asked(tmp_path):
    postgres = "postgres://abacus@db:5432/abacus"
    assert _abacus_demo(tmp_path) == "True"
    assert _abacus_demo(tmp_path, DATABASE_URL=postgres) == "False"
    assert _abacus_demo(tmp_path, DATABASE_URL=postgres, ABACUS_DEMO="1") == "True"


def test_seed_demo_refuses_outside_a_demo_install(settings, django_user_model):
    settings.ABACUS_DEMO = False
    with pytest.raises(CommandError, match="ABACUS_DEMO=1"):
        call_command("seed_demo")
    assert not django_user_model.objects.filter(username=DEMO_USER).exists()


def test_the_demo_user_is_an_admin_of_the_demo_project_only(django_user_model, project):
    demo = project_create(slug="demo", name="Demo shop")
    user = demo_user_ensure(demo)
    assert not user.is_superuser and not user.is_staff
    assert user.check_password(DEMO_PASSWORD)
    assert list(Membership.objects.filter(user=user).values_list("project__slug", "role")) == [
        ("demo", Role.ADMIN)
    ]


def test_an_old_superuser_demo_login_is_demoted(django_user_model):
    django_user_model.objects.create_superuser(DEMO_USER, "demo@example.com", DEMO_PASSWORD)
    user = demo_user_ensure(project_create(slug="demo", name="Demo shop"))
    user.refresh_from_db()
    assert not user.is_superuser and not user.is_staff
