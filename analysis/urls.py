from django.urls import path

from analysis import holdout_views, views

urlpatterns = [
    path("p/<slug:project>/results/", views.results_overview, name="results-overview"),
    path("p/<slug:project>/library/", views.library_page, name="library"),
    path("p/<slug:project>/holdout/", holdout_views.holdout_page, name="holdout"),
    path(
        "p/<slug:project>/holdout/<int:holdout_id>/",
        holdout_views.holdout_detail,
        name="holdout-detail",
    ),
    path(
        "p/<slug:project>/holdout/<int:holdout_id>/analyze/",
        holdout_views.holdout_analyze_now,
        name="holdout-analyze",
    ),
    path(
        "p/<slug:project>/experiments/<slug:key>/results/",
        views.results_page,
        name="experiment-results",
    ),
    path(
        "p/<slug:project>/experiments/<slug:key>/analyze/",
        views.analyze_now,
        name="experiment-analyze",
    ),
]
