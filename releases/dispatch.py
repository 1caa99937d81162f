"""The one place that hands release work to Celery (the tasks import the monitor; nothing
imports the tasks back)."""


def enqueue_analysis(release_id: int) -> None:
    from releases.tasks import analyze

    analyze.delay(release_id)
