"""Upload the dashboards to a running Grafana through its HTTP API (grafana-client).

In order: the InfluxDB datasource is created when ``GET /api/datasources/uid/{uid}`` says 404
(``POST /api/datasources``, from the same provisioning file compose uses, with the InfluxDB
URL, organisation and read-only token filled in); the folder likewise
(``GET /api/folders/{uid}``, ``POST /api/folders``); then every dashboard is saved with
``POST /api/dashboards/db`` ``{"dashboard": ..., "folderUid": ..., "overwrite": true}``.
An existing datasource or folder is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from citystream.errors import CitystreamError
from dashboards.deploy import FOLDER_TITLE, FOLDER_UID, datasources
from dashboards.panels import DATASOURCE_UID

logger = logging.getLogger(__name__)

Json = dict[str, Any]


class PushError(CitystreamError):
    """Grafana refused or could not be reached."""


@dataclass
class PushReport:
    datasource_created: bool = False
    folder_created: bool = False
    dashboards: list[str] = field(default_factory=list)
    """URLs Grafana answered for the saved dashboards."""


def datasource_payload(influx_url: str, org: str, token: str) -> Json:
    """The provisioned datasource, for ``POST /api/datasources``."""
    env = {"INFLUX_URL": influx_url, "INFLUX_ORG": org, "INFLUX_DASHBOARD_TOKEN": token}
    (ds,) = (d for d in datasources(env) if d["uid"] == DATASOURCE_UID)
    return {
        "name": ds["name"],
        "uid": ds["uid"],
        "type": ds["type"],
        "access": ds.get("access", "proxy"),
        "url": ds["url"],
        "isDefault": bool(ds.get("isDefault", False)),
        "jsonData": ds.get("jsonData") or {},
        "secureJsonData": ds.get("secureJsonData") or {},
    }


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def push(
    url: str,
    token: str,
    dashboards: Mapping[str, Json],
    datasource: Json,
    *,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    timeout_s: float = 10.0,
) -> PushReport:
    """Create what is missing and save every dashboard; raises :class:`PushError`."""
    import niquests
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    report = PushReport()
    try:
        try:
            api.datasource.get_datasource_by_uid(datasource["uid"])
        except GrafanaException as exc:
            if _status(exc) != 404:
                raise
            api.datasource.create_datasource(datasource)
            report.datasource_created = True
            logger.info("created datasource %s", datasource["uid"])
        try:
            api.folder.get_folder(folder_uid)
        except GrafanaException as exc:
            if _status(exc) != 404:
                raise
            api.folder.create_folder(folder_title, uid=folder_uid)
            report.folder_created = True
            logger.info("created folder %s", folder_uid)
        for name, dashboard in dashboards.items():
            answer = api.dashboard.update_dashboard(
                {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": True, "message": "citystream"}
            )
            where = answer.get("url", name) if isinstance(answer, dict) else name
            report.dashboards.append(str(where))
            logger.info("saved %s (%s)", name, where)
    except GrafanaException as exc:
        raise PushError(f"Grafana at {url} refused: {exc}") from exc
    except niquests.exceptions.RequestException as exc:
        raise PushError(f"Grafana at {url} is not reachable: {exc}") from exc
    finally:
        # grafana-client has no close(); its HTTP session is its ``client.s``.
        api.client.s.close()
    return report
