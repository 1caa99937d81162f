"""REST API for people (session or token auth): projects, metrics, experiments, lifecycle.

One module per domain (``projects``, ``metrics``, ``experiments``, ``holdouts``, ``power``);
the URL conf (experiments/api_urls.py) and other apps import the views from the package.
"""

from experiments.apis.access import project_for
from experiments.apis.experiments import (
    LIFECYCLE,
    AuditEntrySerializer,
    ConcludeInput,
    ExperimentActionApi,
    ExperimentAuditApi,
    ExperimentDetailApi,
    ExperimentListApi,
    ExperimentMetricSerializer,
    ExperimentSerializer,
    LifecycleInput,
    RampInput,
    RampStageSerializer,
    RollbackInput,
    VariantSerializer,
)
from experiments.apis.holdouts import (
    HoldoutActionApi,
    HoldoutDetailApi,
    HoldoutListApi,
    HoldoutSerializer,
)
from experiments.apis.layers import LayerListApi, LayerSerializer, LayerSliceSerializer
from experiments.apis.metrics import MetricDetailApi, MetricListApi, MetricSerializer
from experiments.apis.power import PowerApi, PowerInput, PowerOutput
from experiments.apis.projects import (
    ApiKeyDetailApi,
    ApiKeyListApi,
    ApiKeySerializer,
    MemberDetailApi,
    MemberListApi,
    MemberRoleSerializer,
    MemberSerializer,
    ProjectListApi,
    ProjectSerializer,
    ProjectSettingsApi,
    ProjectSettingsSerializer,
    WebhookSecretApi,
    WebhookSecretSerializer,
)

__all__ = [
    "LIFECYCLE",
    "ApiKeyDetailApi",
    "ApiKeyListApi",
    "ApiKeySerializer",
    "AuditEntrySerializer",
    "ConcludeInput",
    "ExperimentActionApi",
    "ExperimentAuditApi",
    "ExperimentDetailApi",
    "ExperimentListApi",
    "ExperimentMetricSerializer",
    "ExperimentSerializer",
    "HoldoutActionApi",
    "HoldoutDetailApi",
    "HoldoutListApi",
    "HoldoutSerializer",
    "LayerListApi",
    "LayerSerializer",
    "LayerSliceSerializer",
    "LifecycleInput",
    "MemberDetailApi",
    "MemberListApi",
    "MemberRoleSerializer",
    "MemberSerializer",
    "MetricDetailApi",
    "MetricListApi",
    "MetricSerializer",
    "PowerApi",
    "PowerInput",
    "PowerOutput",
    "ProjectListApi",
    "ProjectSerializer",
    "ProjectSettingsApi",
    "ProjectSettingsSerializer",
    "RampInput",
    "RampStageSerializer",
    "RollbackInput",
    "VariantSerializer",
    "WebhookSecretApi",
    "WebhookSecretSerializer",
    "project_for",
]
