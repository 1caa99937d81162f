"""Results and exports as pandas DataFrames in one call, for notebooks (docs/clients.md).

    from abacus_client.notebook import Notebook
    nb = Notebook("https://abacus.example.com", token="...")   # a personal API token
    results = nb.results("shop", "checkout-v2")                # the dashboard's latest table
    history = nb.export("shop", experiment="checkout-v2", history="looks")

Needs the extra `notebook` (pandas and pyarrow): `pip install "./clients/python[notebook]"`.
Every call is one HTTP request with the person's token (`Authorization: Token ...`); errors
from abacus raise `AbacusApiError` carrying its message (which names the bad parameter).
"""

from __future__ import annotations

import io
from typing import Any

import requests

EXPORT_FILTERS = ("status", "since", "until", "latest", "history")


class AbacusApiError(RuntimeError):
    """abacus answered with an error: `status` is the HTTP status, the message is its detail."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Notebook:
    """Read-only access to an abacus project's results for analysis in pandas."""

    def __init__(
        self,
        host: str,
        *,
        token: str,
        timeout: float = 60.0,
        session: requests.Session | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def results(self, project: str, experiment: str) -> Any:
        """The latest snapshot's comparison rows (one per metric and treatment arm), as the
        results API returns them; the snapshot's own fields (`computed_at`, `data_through`,
        `recommendation`, `health`...) are in `frame.attrs`."""
        pd = _pandas()
        body = self._get(f"/api/v1/projects/{project}/experiments/{experiment}/results").json()
        frame = pd.json_normalize(body.get("metrics") or [], sep=".")
        frame.attrs.update({k: v for k, v in body.items() if k != "metrics"})
        return frame

    def export(
        self, project: str, *, experiment: str | list[str] | None = None, **filters: Any
    ) -> Any:
        """The export table (docs/exports.md: one row per experiment, snapshot, metric and
        variant, with the sufficient statistics) read from its Parquet form, so columns keep
        their types (timestamps, list columns). `experiment`: one key, a list, or None for the
        whole project; `filters`: status, since, until, latest, history as in the export API."""
        pd = _pandas()
        unknown = sorted(set(filters) - set(EXPORT_FILTERS))
        if unknown:
            raise TypeError(f"unknown export filter(s): {', '.join(unknown)}")
        params: dict[str, str] = {"format": "parquet"}
        for name, value in filters.items():
            if value is not None:
                params[name] = _param(value)
        if isinstance(experiment, str):
            path = f"/api/v1/projects/{project}/experiments/{experiment}/export"
        else:
            path = f"/api/v1/projects/{project}/results/export"
            if experiment:
                params["experiment"] = ",".join(experiment)
        return pd.read_parquet(io.BytesIO(self._get(path, params).content))

    def _get(self, path: str, params: dict[str, str] | None = None) -> requests.Response:
        response = self.session.get(self.host + path, params=params, timeout=self.timeout)
        if response.status_code >= 400:
            raise AbacusApiError(response.status_code, _detail(response))
        return response


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:300]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            'abacus_client.notebook needs pandas and pyarrow: pip install "abacus-client[notebook]"'
        ) from exc
    return pandas
