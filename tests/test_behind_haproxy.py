"""trioserve behind a real HAProxy in TCP mode, configured as docs/deployment.md
shows: HAProxy sends a PROXY protocol v2 header, and trioserve
(``--proxy-protocol v2``) takes the client's address from it. The client connects
from 127.0.0.2, so its address differs from HAProxy's own. Without HAProxy the
module is skipped with the install command, or fails when ``CI`` is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from _proxies import require_program, run_haproxy, run_trioserve

require_program("haproxy")


def test_client_address_comes_from_haproxys_proxy_protocol_header(tmp_path: Path) -> None:
    with (
        run_trioserve("--proxy-protocol", "v2") as server,
        run_haproxy(tmp_path, server.upstream) as url,
    ):
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=10) as http:
            responses = [http.get(f"{url}/scope") for _ in range(3)]
    for response in responses:
        assert response.status_code == 200, response.text
        seen = json.loads(response.text)
        assert seen["client"][0] == "127.0.0.2"
        assert seen["scheme"] == "http"
