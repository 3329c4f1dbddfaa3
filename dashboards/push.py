"""Push the rendered dashboards into a Grafana folder with grafana-client, idempotently.

Each dashboard is read back first and written only when its content or its
folder differs, so a second push makes no write request (and leaves
Grafana's version history alone).
"""

from __future__ import annotations

import json

from dataclasses import dataclass

from fairwatch.monitor.errors import FairwatchError, first_line


class PushError(FairwatchError):
    """Grafana unreachable or refusing us, worded for one line."""


@dataclass(frozen=True)
class PushResult:
    folder_created: bool
    written: list[str]
    unchanged: list[str]


# Fields Grafana sets on save: not part of what we render.
_SERVER_FIELDS = ("id", "version")


def _comparable(document: dict) -> dict:
    return {k: v for k, v in document.items() if k not in _SERVER_FIELDS}


def _explain(exc: Exception, url: str) -> PushError:
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    status = getattr(exc, "status_code", None)
    if isinstance(exc, GrafanaUnauthorizedError) or status in (401, 403):
        return PushError(f"Grafana at {url} refused the token (HTTP {status or 401}): "
                         "check GRAFANA_TOKEN / --token (a service-account token with Editor rights)")
    if isinstance(exc, GrafanaClientError | GrafanaException) and status:
        return PushError(f"Grafana at {url} answered HTTP {status}: {getattr(exc, 'message', exc)}")
    if _caused_by(exc, json.JSONDecodeError):
        return PushError(f"{url} answered with a body that is not JSON ({_root_cause(exc)}): is it Grafana's base URL?")
    return PushError(f"cannot reach Grafana at {url}: {_root_cause(exc)}")


def _causes(exc: BaseException):
    """``exc`` and every exception under it: causes, contexts, a URLError's reason, exceptions passed as args."""
    stack: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack += [item.__cause__, item.__context__, getattr(item, "reason", None),
                  *(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))]


def _caused_by(exc: BaseException, kind: type) -> bool:
    return any(isinstance(item, kind) for item in _causes(exc))


def _root_cause(exc: BaseException) -> str:
    """The innermost OS error (``Connection refused``, ``timed out``) under the HTTP library's wrappers."""
    return next((item.strerror for item in _causes(exc) if isinstance(item, OSError) and item.strerror),
                first_line(exc, 160))


def push(url: str, token: str | None, dashboards: dict[str, dict], folder_title: str = "fairwatch",
         folder_uid: str = "fairwatch", timeout: float = 10.0) -> PushResult:
    """Create the folder if missing and write each dashboard whose stored copy differs."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    try:
        api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
        folder_created = False
        try:
            api.folder.get_folder(folder_uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(folder_title, uid=folder_uid)
            folder_created = True
        written, unchanged = [], []
        for document in dashboards.values():
            try:
                stored = api.dashboard.get_dashboard(document["uid"])
            except GrafanaClientError as exc:
                if exc.status_code != 404:
                    raise
                stored = None
            if stored is not None and not isinstance(stored, dict):
                raise PushError(f"{url} answered a dashboard request with something other than Grafana's JSON "
                                f"({type(stored).__name__}): is it Grafana's base URL, not a proxy's login page?")
            if (stored is not None and _comparable(stored.get("dashboard", {})) == _comparable(document)
                    and stored.get("meta", {}).get("folderUid") == folder_uid):
                unchanged.append(document["uid"])
                continue
            # overwrite: the uid is ours; whatever is stored under it is an older render.
            saved = api.dashboard.update_dashboard({"dashboard": {**document, "id": None}, "folderUid": folder_uid,
                                                    "overwrite": True, "message": "fairwatch dashboards push"})
            # Grafana answers a save with the dashboard's uid; anything else (a proxy's 200 page) saved nothing.
            if not isinstance(saved, dict) or saved.get("uid") != document["uid"]:
                raise PushError(f"{url} did not confirm saving dashboard {document['uid']} (answered "
                                f"{str(saved)[:80]!r}): is it Grafana's base URL?")
            written.append(document["uid"])
    except (GrafanaException, OSError) as exc:  # niquests' connection errors are OSErrors
        raise _explain(exc, url) from None
    except (ValueError, RecursionError) as exc:  # a URL the client cannot use; an answer no JSON parser takes
        raise PushError(f"cannot use Grafana at {url}: {first_line(exc, 160)}") from None
    return PushResult(folder_created, written, unchanged)
