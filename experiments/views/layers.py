"""The layer page: which ranges of each mutually exclusive layer are taken and which are free."""

from django.http import HttpRequest, HttpResponse

from experiments.layers import LayerUsage, layers_for_project
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
        # A layer no experiment names yet is all free: the page helps plan the first one.
        layers = [LayerUsage(layer=layer, taken=[], free=[(0.0, 1.0)])]
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
