"""The one client of the Prometheus HTTP API: instant queries and plain JSON reads.

``PrometheusClient(url).query('sum(up)')`` returns the result vector of ``/api/v1/query``;
``get(path, params)`` returns the JSON of any GET under the base URL (``/api/v1/alerts``, or
Alertmanager's ``/api/v2/alerts`` with ``name="Alertmanager"``). Every failure is one
:class:`PrometheusError` naming the URL and the query. The kubernetes target reads its analysis
metrics through it, the alert sources (:mod:`mlops.alerting.sources`) read Prometheus' and
Alertmanager's alerts through it.

httpx is imported when a request is made. Pass ``http`` (an ``httpx.Client``, e.g. with a
``MockTransport`` in tests) to reuse one; otherwise each request opens and closes its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["PrometheusClient", "PrometheusError"]


class PrometheusError(RuntimeError):
    """A request to Prometheus failed: no answer, an error answer, or not the expected data."""

    def __init__(self, message: str, *, url: str, query: str):
        super().__init__(message)
        self.url = url
        self.query = query


class PrometheusClient:
    """Prometheus (or an API of the same family) at ``base_url``.

    Args:
        base_url: e.g. ``http://prometheus.monitoring:9090`` (a path prefix is kept, a trailing ``/``
            is not).
        timeout: seconds per request (for clients this object opens).
        http: an ``httpx.Client`` to send the requests with (not closed here).
        trust_env: whether clients opened here read proxy settings from the environment.
        name: how errors name the server (``Prometheus``, ``Alertmanager``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
        trust_env: bool = True,
        name: str = "Prometheus",
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = http
        self.trust_env = trust_env
        self.name = name

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` under the base URL."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def _send(self, path: str, params: dict[str, str] | None, what: str) -> tuple[int, Any, str]:
        """(status, parsed JSON body, url) of ``GET path``; a transport error or non-JSON body raises."""
        import httpx

        url = self.url(path)
        client = self.http or httpx.Client(timeout=self.timeout, trust_env=self.trust_env)
        try:
            resp = client.get(url, params=params)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(
                f"{self.name} at {url} did not answer {what}: {exc}", url=url, query=what
            ) from exc
        finally:
            if self.http is None:
                client.close()
        return resp.status_code, body, url

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The JSON answer of ``GET <base_url>/<path>?<params>``; a non-2xx answer raises."""
        what = path + (f" {params}" if params else "")
        status, body, url = self._send(path, params, what)
        if not 200 <= status < 300:
            raise PrometheusError(
                f"{self.name} at {url}: {what} failed ({status}): {_api_error(body)}".rstrip(": "),
                url=url,
                query=what,
            )
        return body

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of the instant query ``promql`` (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        status, body, url = self._send("/api/v1/query", {"query": promql}, repr(promql))
        ok = isinstance(body, dict) and body.get("status") == "success"
        if status != 200 or not ok:
            raise PrometheusError(
                f"{self.name} at {url}: query {promql!r} failed ({status}): {_api_error(body)}".rstrip(": "),
                url=url,
                query=promql,
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(
                f"{self.name} at {url}: query {promql!r}: expected a vector, got {data.get('resultType')}",
                url=url,
                query=promql,
            )
        return list(data.get("result") or [])


def _api_error(body: Any) -> str:
    """``errorType error`` of a Prometheus API error answer (empty for any other body)."""
    if not isinstance(body, dict):
        return ""
    return f"{body.get('errorType', '')} {body.get('error', '')}".strip()
