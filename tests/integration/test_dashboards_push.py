"""``citystream dashboards push`` against a local HTTP server that answers like Grafana's API.

No Grafana server runs here (it cannot be installed): the server below checks what Grafana's
HTTP API expects (paths, the ``Authorization: Bearer`` header, the body shapes) and records the
calls, so the test shows what a real Grafana would be sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from cli.main import main
from dashboards import catalogue
from dashboards.deploy import FOLDER_UID
from dashboards.panels import DATASOURCE_UID
from dashboards.push import PushError, datasource_payload, push

pytestmark = pytest.mark.integration

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    url: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)
    datasources: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, Any] = field(default_factory=dict)
    dashboards: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def require(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)
            raise web.HTTPBadRequest(text=f'{{"message": "{problem}"}}', content_type="application/json")


def _app(grafana: FakeGrafana) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        grafana.calls.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "Unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def get_datasource(request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in grafana.datasources:
            return web.json_response({"message": "Data source not found"}, status=404)
        return web.json_response(grafana.datasources[uid])

    async def post_datasource(request: web.Request) -> web.Response:
        body = await request.json()
        grafana.require(
            {"name", "type", "uid", "url", "access", "jsonData", "secureJsonData"} <= set(body),
            f"datasource body lacks fields: {sorted(body)}",
        )
        grafana.require(body["type"] == "influxdb" and body["access"] == "proxy", "not an InfluxDB proxy")
        grafana.require(body["jsonData"].get("version") == "Flux", "not Flux")
        grafana.require(bool(body["jsonData"].get("organization")), "no organization")
        grafana.require(bool(body["secureJsonData"].get("token")), "no token")
        grafana.require(body["uid"] not in grafana.datasources, "datasource exists")
        grafana.datasources[body["uid"]] = body
        return web.json_response({"datasource": {**body, "id": 1}, "id": 1, "message": "Datasource added"})

    async def get_folder(request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in grafana.folders:
            return web.json_response({"message": "folder not found"}, status=404)
        return web.json_response(grafana.folders[uid])

    async def post_folder(request: web.Request) -> web.Response:
        body = await request.json()
        grafana.require(set(body) >= {"title", "uid"}, f"folder body: {body}")
        grafana.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": 7}
        return web.json_response(grafana.folders[body["uid"]])

    async def post_dashboard(request: web.Request) -> web.Response:
        body = await request.json()
        grafana.require(
            set(body) >= {"dashboard", "folderUid", "overwrite"}, f"dashboard body: {sorted(body)}"
        )
        grafana.require(body["overwrite"] is True, "overwrite is not true")
        grafana.require(body["folderUid"] in grafana.folders, "unknown folder")
        dash = body["dashboard"]
        grafana.require(bool(dash.get("uid")) and bool(dash.get("title")), "dashboard without uid/title")
        grafana.require(dash.get("id") is None, "a new dashboard must not carry an id")
        for panel in dash["panels"]:
            for target in panel["targets"]:
                grafana.require(target["datasource"]["uid"] in grafana.datasources, "unknown datasource")
        version = grafana.dashboards.get(dash["uid"], {}).get("version", 0) + 1
        grafana.dashboards[dash["uid"]] = {"dashboard": dash, "version": version}
        return web.json_response(
            {
                "id": version,
                "uid": dash["uid"],
                "url": f"/d/{dash['uid']}/x",
                "status": "success",
                "version": version,
            }
        )

    app = web.Application(middlewares=[auth])
    app.router.add_get("/api/datasources/uid/{uid}", get_datasource)
    app.router.add_post("/api/datasources", post_datasource)
    app.router.add_get("/api/folders/{uid}", get_folder)
    app.router.add_post("/api/folders", post_folder)
    app.router.add_post("/api/dashboards/db", post_dashboard)
    return app


@pytest.fixture
async def grafana() -> AsyncIterator[FakeGrafana]:
    fake = FakeGrafana()
    runner = web.AppRunner(_app(fake))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


DATASOURCE = datasource_payload("http://influxdb:8086", "citystream", "read-only-token")


async def test_push_creates_datasource_and_folder_then_saves_every_dashboard(grafana: FakeGrafana) -> None:
    dashboards = catalogue.render_all("ko", ("city", "city_agg"))
    report = await asyncio.to_thread(push, grafana.url, TOKEN, dashboards, DATASOURCE)
    assert grafana.problems == []
    assert report.datasource_created
    assert report.folder_created
    assert grafana.calls == [
        ("GET", f"/api/datasources/uid/{DATASOURCE_UID}"),
        ("POST", "/api/datasources"),
        ("GET", f"/api/folders/{FOLDER_UID}"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(dashboards),
    ]
    assert sorted(grafana.dashboards) == sorted(d["uid"] for d in dashboards.values())
    assert all(uid.endswith("-ko") for uid in grafana.dashboards)
    assert grafana.datasources[DATASOURCE_UID]["secureJsonData"] == {"token": "read-only-token"}
    assert report.dashboards == [f"/d/{d['uid']}/x" for d in dashboards.values()]


async def test_second_push_overwrites_and_creates_nothing(grafana: FakeGrafana) -> None:
    dashboards = catalogue.render_all("en", ("city", "city_agg"))
    await asyncio.to_thread(push, grafana.url, TOKEN, dashboards, DATASOURCE)
    grafana.calls.clear()
    report = await asyncio.to_thread(push, grafana.url, TOKEN, dashboards, DATASOURCE)
    assert grafana.problems == []
    assert not report.datasource_created
    assert not report.folder_created
    assert [c for c in grafana.calls if c[0] == "POST"] == [("POST", "/api/dashboards/db")] * len(dashboards)
    assert {d["version"] for d in grafana.dashboards.values()} == {2}


async def test_a_wrong_token_is_a_clear_error(grafana: FakeGrafana) -> None:
    with pytest.raises(PushError, match="refused"):
        await asyncio.to_thread(push, grafana.url, "wrong", {}, DATASOURCE)
    assert grafana.calls == [("GET", f"/api/datasources/uid/{DATASOURCE_UID}")]


async def test_an_unreachable_grafana_is_a_clear_error(grafana: FakeGrafana) -> None:
    url = grafana.url.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens
    with pytest.raises(PushError, match="not reachable"):
        await asyncio.to_thread(push, url, TOKEN, {}, DATASOURCE, timeout_s=2.0)


async def test_the_command_pushes_the_settings_language(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(
        main, ["dashboards", "push", "--url", grafana.url, "--token", TOKEN, "--language", "en"]
    )
    assert code == 0
    assert grafana.problems == []
    assert "citystream-city" in grafana.dashboards
    assert "created datasource citystream-influxdb" in capsys.readouterr().out
    code = await asyncio.to_thread(main, ["dashboards", "push", "--url", grafana.url, "--token", "bad"])
    assert code == 2
