"""``campana serve | migrate | token | send``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from campana import migrations
from campana.auth import SEND_SCOPE, hmac_secret, mint_token
from campana.capacity import raise_descriptor_limit
from campana.logs import log_config
from campana.schemas import NotificationType
from campana.settings import InvalidSettings, Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        return int(args.run(settings, args))
    except InvalidSettings as error:
        print(f"campana: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campana", description="Real-time in-app notifications. Settings: CAMPANA_*."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes on this port (needs CAMPANA_REDIS_URL)"
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="print a JWT for USER (development, tests)")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument(
        "--scope", action="append", default=[], help=f"e.g. {SEND_SCOPE}; repeatable"
    )
    token.set_defaults(run=_token)

    send = commands.add_parser("send", help="create a notification through a running server")
    send.add_argument("users", nargs="+", metavar="USER")
    send.add_argument("--type", default="GENERIC_INFO", choices=[t.value for t in NotificationType])
    send.add_argument("--message", required=True)
    send.add_argument("--link", default=None)
    send.add_argument("--url", default="http://127.0.0.1:8000")
    send.add_argument(
        "--token", default=None, help="producer token; default: minted with the local secret"
    )
    send.set_defaults(run=_send)
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if args.workers < 1:
        print("campana: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and not settings.redis_url:
        print(
            "campana: --workers above 1 needs CAMPANA_REDIS_URL: without a shared broker, "
            "a notification would reach only the sockets of the worker that created it",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and settings.is_embedded_database:
        print("campana: --workers above 1 needs CAMPANA_DATABASE_URL (PostgreSQL)", file=sys.stderr)
        return 2
    if settings.is_embedded_database:
        _migrate(settings, args)
    elif not migrations.is_current(settings.resolved_database_url):
        print("campana: the database schema is not current; run `campana migrate`", file=sys.stderr)
        return 2
    if settings.uses_hmac:
        hmac_secret(settings)  # generated before workers start, so they share it
    if args.workers > 1:
        _share_metrics_between_workers()
    raise_descriptor_limit()  # the connection cap is derived from it (campana.capacity)
    config = uvicorn.Config(
        "campana.app:create_app_from_environment",
        factory=True,
        log_config=log_config(args.log_level.upper(), settings.log_format),
        workers=args.workers,
        timeout_graceful_shutdown=settings.stop_plan.drain_seconds,  # type: ignore[arg-type] # a float works
        **server_options(settings),
    )
    try:
        sock = listening_socket(args.host, args.port, settings.socket_send_buffer_bytes)
    except OSError as error:
        print(f"campana: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        if args.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    return 0


def _share_metrics_between_workers() -> None:
    """Each worker writes its metrics to one folder; /metrics sums them."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="campana-metrics-")


def listening_socket(host: str, port: int, send_buffer_bytes: int) -> socket.socket:
    """The listening socket; accepted connections inherit its send buffer size.

    A bounded kernel buffer is what lets a client that stops reading fill its send queue
    and be closed with 1013, instead of parking megabytes in the kernel.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol named: asyncio turns Nagle off only on sockets that say they are TCP,
    # and accepted ones inherit it; without it every small answer waits for an ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def server_options(settings: Settings) -> dict[str, Any]:
    """Uvicorn options the wire format depends on (tests start servers with them too)."""
    return {
        # Every request has a deadline and a size bound for its head and body (api/http.py).
        "http": "campana.api.http:HttpProtocol",
        "timeout_keep_alive": settings.http_idle_timeout_seconds,
        # Sockets are served below ASGI, without a task each (api/ws.py).
        "ws": "campana.api.ws:SocketProtocol",
        # The protocol layer refuses bigger frames with close code 1009 before any parsing.
        "ws_max_size": settings.ws_max_frame_bytes,
        "ws_ping_interval": settings.ws_ping_interval_seconds,
        "ws_ping_timeout": settings.ws_ping_timeout_seconds,
        # Small JSON frames gain little; compression costs memory per socket and can leak secrets.
        "ws_per_message_deflate": False,
        # X-Forwarded-* is a client's word unless a configured proxy wrote it.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or None,
    }


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    if settings.is_embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.resolved_database_url)
    print("campana: database is current")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    try:
        print(mint_token(settings, args.user, ttl_seconds=args.ttl, scopes=tuple(args.scope)))
    except ValueError as error:
        print(f"campana: {error}", file=sys.stderr)
        return 2
    return 0


def _send(settings: Settings, args: argparse.Namespace) -> int:
    token = args.token or mint_token(settings, "campana-cli", ttl_seconds=60, scopes=(SEND_SCOPE,))
    recipients = {"user_id": args.users[0]} if len(args.users) == 1 else {"user_ids": args.users}
    body = {**recipients, "type": args.type, "message": args.message, "link_url": args.link}
    request = urllib.request.Request(  # noqa: S310 (the URL is the operator's own server)
        f"{args.url.rstrip('/')}/api/v1/notifications/",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            print(response.read().decode())
    except urllib.error.HTTPError as error:
        print(f"campana: {error.code} {error.read().decode()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"campana: cannot reach {args.url}: {error.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
