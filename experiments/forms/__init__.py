"""Forms of the PM web UI. They check shape (types, ranges, weights sum to 1); the services
enforce the state rules, and their DomainError lands on the field it names.

One module per page family (``experiments`` and its ``editor``, ``metrics``, ``projects``;
shared fields in ``fields``); the views import them from the package.
"""

from experiments.forms.editor import ExperimentEditor
from experiments.forms.experiments import (
    FORM_FIELDS,
    HASH_ATTRIBUTES,
    RESERVED_KEYS,
    BaseExperimentMetricFormSet,
    BaseRampFormSet,
    BaseVariantFormSet,
    ConcludeForm,
    ExperimentForm,
    ExperimentMetricForm,
    ExperimentMetricFormSet,
    RampForm,
    RampFormSet,
    RampStageForm,
    RollbackForm,
    VariantForm,
    VariantFormSet,
)
from experiments.forms.fields import JSONTextField, add_error_to_form
from experiments.forms.metrics import MetricForm
from experiments.forms.projects import (
    ApiKeyForm,
    MemberAddForm,
    MemberRoleForm,
    ProjectForm,
    ProjectSettingsForm,
)
from experiments.models import Role  # the settings page lists forms.Role.choices

__all__ = [
    "FORM_FIELDS",
    "HASH_ATTRIBUTES",
    "RESERVED_KEYS",
    "ApiKeyForm",
    "BaseExperimentMetricFormSet",
    "BaseRampFormSet",
    "BaseVariantFormSet",
    "ConcludeForm",
    "ExperimentEditor",
    "ExperimentForm",
    "ExperimentMetricForm",
    "ExperimentMetricFormSet",
    "JSONTextField",
    "MemberAddForm",
    "MemberRoleForm",
    "MetricForm",
    "ProjectForm",
    "ProjectSettingsForm",
    "RampForm",
    "RampFormSet",
    "RampStageForm",
    "Role",
    "RollbackForm",
    "VariantForm",
    "VariantFormSet",
    "add_error_to_form",
]
