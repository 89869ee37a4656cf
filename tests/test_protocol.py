"""The TypeScript client and the server speak one wire format: same path, same codes."""

from __future__ import annotations

import re
from pathlib import Path

from campana import protocol

CLIENT_PROTOCOL = Path(__file__).parent.parent / "clients/typescript/src/protocol.ts"
# Codes the client sends itself, which the server never does.
CLIENT_ONLY = {"CLOSE_NORMAL"}


def client_constants() -> dict[str, object]:
    found = re.findall(r"export const (\w+) = (\d+|'[^']*');", CLIENT_PROTOCOL.read_text())
    return {name: int(value) if value.isdigit() else value.strip("'") for name, value in found}


def test_the_client_has_the_servers_socket_path_and_every_close_code() -> None:
    client = client_constants()
    server = {
        name: getattr(protocol, name)
        for name in dir(protocol)
        if name.startswith("CLOSE_") or name == "SOCKET_PATH"
    }
    assert {k: v for k, v in client.items() if k not in CLIENT_ONLY} == server
