"""The layer page: which ranges of each mutually exclusive layer are taken and which are free."""

from django.http import Http404, HttpRequest, HttpResponse

from experiments.selectors import layers_for_project
from experiments.views.pages import Page, project_page

# The bar is an SVG drawn on the server: positions are attributes, not inline styles, so the
# page needs no script and no style attribute under the Content-Security-Policy.
BAR_WIDTH = 1000


def _bar(start: float, end: float) -> dict[str, float]:
    return {"x": round(start * BAR_WIDTH, 2), "width": round((end - start) * BAR_WIDTH, 2)}


@project_page("read")
def layer_list(request: HttpRequest, page: Page, layer: str | None = None) -> HttpResponse:
    layers = layers_for_project(page.project, layer)
    if layer is not None and not layers:
        raise Http404(f"No experiment of this project uses layer '{layer}'.")
    rows = [
        {
            "usage": usage,
            "taken": [(s, _bar(s.start, s.end)) for s in usage.taken],
            "free": [((start, end), _bar(start, end)) for start, end in usage.free],
        }
        for usage in layers
    ]
    return page.render(
        "experiments/layers.html", {"layers": rows, "one_layer": layer, "bar_width": BAR_WIDTH}
    )
