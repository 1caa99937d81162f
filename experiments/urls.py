from django.urls import path

from experiments import views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:project>/", views.experiment_list, name="experiment-list"),
    path(
        "p/<slug:project>/experiments/<slug:key>/",
        views.experiment_detail,
        name="experiment-detail",
    ),
]
