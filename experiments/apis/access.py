"""Resolve the project named in an API URL for the caller and check their role."""

from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from experiments.models import Project
from experiments.selectors import project_get_for_user, role_of, user_can


def project_for(request: Request, slug: str, permission: str = "read") -> Project:
    project = project_get_for_user(request.user, slug)
    if not user_can(request.user, project, permission):
        raise PermissionDenied(
            f"Your role in '{slug}' ({role_of(request.user, project)}) may not {permission}."
        )
    return project
