"""abacus's Celery queues: which queue each task goes to, and at what priority.

Four queues, so that one kind of work never waits behind another (docs/operations.md
"Queues and worker pools"):

- ``releases``: guarded releases: the tick and each release's analysis, which advances the
  release or rolls it back. Small and urgent: a rollback must never wait behind analyses;
- ``ingest``: the serving and ingestion side's own work: the beat's scheduled flag changes
  (due within 15 s of their time), the hourly event-storage maintenance (partitions,
  retention), and any later task of ``flags`` or ``assignments``;
- ``analysis``: experiment analyses (the beat's fan-out and each run): heavy, up to 30 minutes;
- ``notify``: signed webhooks and notifications (Slack, email): network I/O, retried for
  about half an hour.

Every task is routed by name (``ROUTES``; a task of the apps listed in ``APP_QUEUES`` that is
not named there goes to its app's queue), so a worker started with ``-Q releases`` runs only
release work, and one started without ``-Q`` (``make run``) consumes all the queues. Nothing
is routed to the default queue (``celery``); it is declared, and consumed by every worker that
runs without ``-Q``, so that tasks queued there by an older abacus still run.

Priorities, on Redis only (the filesystem transport and RabbitMQ without ``x-max-priority``
queues ignore them): kombu keeps one list per queue and priority step (0, 3, 6, 9) and a worker
pops from every list of every queue it consumes in one ``BRPOP``, lowest number first
(**0 is the highest priority on Redis**, the reverse of RabbitMQ). So on a worker that
consumes several queues, release and flag work (0) is taken before any notification or
requested analysis (3), and those before the beat's scheduled analyses (6): a flood of
scheduled analyses delays a rollback by at most the tasks already running.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from kombu import Exchange, Queue

RELEASES, INGEST, ANALYSIS, NOTIFY = "releases", "ingest", "analysis", "notify"
ROLES = (RELEASES, INGEST, ANALYSIS, NOTIFY)
DEFAULT = "celery"  # Celery's own default queue name: no abacus task is routed there

# Redis priorities: 0 is taken first.
URGENT, REQUESTED, SCHEDULED = 0, 3, 6

# task name -> (queue role, priority). Time limits live on the tasks themselves.
ROUTES: dict[str, tuple[str, int]] = {
    "releases.tick": (RELEASES, URGENT),
    "releases.analyze": (RELEASES, URGENT),
    "flags.apply_scheduled_changes": (INGEST, URGENT),
    # Hourly housekeeping of the event tables: after any flag change due at the same moment.
    "assignments.schedule_event_maintenance": (INGEST, SCHEDULED),
    "assignments.maintain_events": (INGEST, SCHEDULED),
    "analysis.schedule_running": (ANALYSIS, SCHEDULED),
    # An analysis a person asked for (it carries its run id) goes before the beat's fan-out
    # (no run id): see route().
    "analysis.run": (ANALYSIS, REQUESTED),
    "analysis.deliver_webhook": (NOTIFY, REQUESTED),
    "notifications.deliver": (NOTIFY, REQUESTED),
    # The sweeps that queue again the deliveries whose message never reached a worker.
    "analysis.resend_webhooks": (NOTIFY, SCHEDULED),
    "notifications.resend_pending": (NOTIFY, SCHEDULED),
}
# A task not named in ROUTES goes to its app's queue (its name's prefix).
APP_QUEUES: dict[str, tuple[str, int]] = {
    "releases": (RELEASES, URGENT),
    "flags": (INGEST, URGENT),
    "assignments": (INGEST, URGENT),
    "analysis": (ANALYSIS, SCHEDULED),
    "notifications": (NOTIFY, REQUESTED),
}


def queue_name(role: str, prefix: str = "") -> str:
    """The broker's name of a queue: ``analysis``, or ``<prefix>.analysis`` with a prefix
    (``ABACUS_TASK_QUEUE``: several deployments, or test runs, sharing one Redis)."""
    return f"{prefix}.{role}" if prefix else role


def default_queue(prefix: str = "") -> str:
    return prefix or DEFAULT


def declared(prefix: str = "") -> list[Queue]:
    """Every queue, the default one included: what a worker without ``-Q`` consumes."""
    names = [default_queue(prefix), *(queue_name(role, prefix) for role in ROLES)]
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names]


def destination(name: str, args: Sequence[Any] = ()) -> tuple[str, int] | None:
    """(queue role, priority) of the task ``name`` called with ``args``; None: not abacus's."""
    if name == "analysis.run" and (len(args) < 2 or args[1] is None):
        return ANALYSIS, SCHEDULED  # the beat's fan-out: no run id
    if name in ROUTES:
        return ROUTES[name]
    return APP_QUEUES.get(name.split(".", 1)[0])


class Router:
    """Celery's ``task_routes`` entry: sends each task to its queue with its priority."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def __call__(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        task: Any = None,
        **_: Any,
    ) -> dict[str, Any] | None:
        found = destination(name, args or ())
        if found is None:
            return None
        role, priority = found
        return {"queue": queue_name(role, self.prefix), "priority": priority}
