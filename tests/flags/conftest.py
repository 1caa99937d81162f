"""Fixtures of the flags tests: a project with members of each role and a boolean flag."""

import pytest

from experiments.models import Environment, Role
from flags.services import flag_create


@pytest.fixture
def editor(make_member):
    return make_member("eddie", Role.EDITOR)


@pytest.fixture
def viewer(make_member):
    return make_member("vera", Role.VIEWER)


@pytest.fixture
def admin2(make_member):
    return make_member("bob", Role.ADMIN)


@pytest.fixture
def envs(project):
    return {e.key: e for e in Environment.objects.filter(project=project)}


@pytest.fixture
def flag(project, admin_user):
    return flag_create(project=project, key="new-checkout", name="New checkout", actor=admin_user)
