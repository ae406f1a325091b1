"""The engine client that talks HTTP to an engine process (optiq_tui.server).

Job events stream as JSON lines (one ``{"seq", "event"}`` per line, then
``{"end": job}``); a dropped stream is resumed from the last event seen.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterator

from optiq_tui.engine.client import EngineCalls
from optiq_tui.engine.jobs import JobInfo
from optiq_tui.engine.wire import decode
from optiq_tui.progress import OptiqError

if TYPE_CHECKING:
    import httpx


# The engine sends a keepalive line every 10 s; six missed ones mean it is gone or hung.
STREAM_READ_S = 60.0


class EngineUnavailable(OptiqError):
    """The engine process did not answer."""


class RemoteClient(EngineCalls):
    def __init__(self, address: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        # httpx is imported where used: importing it loads Rich (for its CLI), which the core must not.
        import httpx

        self.address = address
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=address, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"the engine at {self.address} did not answer ({exc})") from None
        if response.status_code >= 400:
            raise OptiqError(_error_message(response))
        return response.json()

    def submit(self, kind: str, **args: Any) -> JobInfo:
        return JobInfo.from_dict(self._call("POST", f"/v1/jobs/{kind}", json=args))

    def job(self, job_id: int) -> JobInfo:
        return JobInfo.from_dict(self._call("GET", f"/v1/jobs/{job_id}"))

    def jobs(self) -> list[JobInfo]:
        return [JobInfo.from_dict(j) for j in self._call("GET", "/v1/jobs")["jobs"]]

    def cancel(self, job_id: int) -> JobInfo:
        return JobInfo.from_dict(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def status(self) -> dict[str, Any]:
        return {**self._call("GET", "/v1/engine"), "address": self.address}

    def shutdown(self) -> None:
        self._call("POST", "/v1/shutdown")

    def events(self, job_id: int, after: int = 0) -> Iterator[Any]:
        import httpx

        while True:
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", params={"after": after},
                                       timeout=httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_S)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise OptiqError(_error_message(response))
                    for line in response.iter_lines():
                        if not line:
                            continue
                        item = json.loads(line)
                        if "end" in item:
                            return
                        after = item["seq"]
                        yield decode(item["event"])
            except httpx.RemoteProtocolError:
                continue  # the stream broke mid-way: resume after the last event seen
            except httpx.TransportError as exc:
                raise EngineUnavailable(f"lost the engine at {self.address} ({exc})") from None

    def close(self) -> None:
        self._http.close()


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"the engine answered {response.status_code}"
