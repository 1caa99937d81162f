from django.urls import path

from analysis import views

urlpatterns = [
    path("p/<slug:project>/results/", views.results_overview, name="results-overview"),
    path("p/<slug:project>/library/", views.library_page, name="library"),
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
