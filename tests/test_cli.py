"""The command line a newcomer uses: serve, token, send, and clear start-up errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from .support.servers import (
    Server,
    ServerPool,
    campana,
    database_url,
    environment,
    free_port,
    start_process,
    wait_until_up,
)


def test_a_bad_setting_stops_start_up_with_one_line_naming_it(tmp_path: Path) -> None:
    env = environment({"data_dir": tmp_path, "keepalive_seconds": -1})
    result = campana("serve", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "CAMPANA_KEEPALIVE_SECONDS" in result.stderr


async def test_token_and_serve_share_a_generated_secret_kept_private(tmp_path: Path) -> None:
    env = environment({"data_dir": tmp_path})
    token = campana("token", "alice", env=env).stdout.strip()

    secret = tmp_path / "jwt-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    port = free_port()
    stop, _ = start_process({"data_dir": tmp_path}, port, tmp_path / "serve.log")
    try:
        await wait_until_up(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.get(
                "/api/v1/notifications/unread-count", headers={"Authorization": f"Bearer {token}"}
            )
        assert answer.status_code == 200
        assert answer.json() == {"count": 0}
        assert (tmp_path / "campana.sqlite3").exists()
    finally:
        stop()


async def test_send_creates_through_the_running_server(server_pool: ServerPool, user: str) -> None:
    server: Server = await server_pool.get("sqlite", "process")
    env = {**os.environ, "CAMPANA_JWT_SECRET": server.settings.jwt_secret or ""}
    async with server.connect(user) as tab:
        await tab.start()
        result = campana(
            "send",
            user,
            "--type",
            "TEMPLATE_APPROVED",
            "--message",
            "Template approved",
            "--link",
            "/templates/7",
            "--url",
            server.base_url,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        item = json.loads(result.stdout)
        assert await tab.next_event() == {"event": "notification.created", "payload": item}
        assert await tab.next_event() == {"event": "unread_count.updated", "payload": {"count": 1}}
    assert item["type"] == "TEMPLATE_APPROVED"
    assert item["link_url"] == "/templates/7"


def test_send_reports_a_server_that_is_not_running(tmp_path: Path) -> None:
    env = environment({"data_dir": tmp_path})
    result = campana(
        "send", "bob", "--message", "hi", "--url", f"http://127.0.0.1:{free_port()}", env=env
    )
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


async def test_serve_writes_nothing_where_it_runs_when_it_generates_nothing(
    database_urls: dict[str, str], tmp_path: Path
) -> None:
    """With the database and the secret given, there is no file to make: the folder it
    runs in stays as it was (no `./data`)."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    options = {"database_url": database_url(database_urls, "postgresql"), "jwt_secret": "s" * 32}
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "campana.cli", "serve", "--port", str(port)],
            env=environment(options),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(30)
    assert list(workdir.iterdir()) == []
