"""HTTPS: TLS on every bind when ``certfile`` and ``keyfile`` are set.

Certificates come from trustme; clients are real (httpx, and trio's SSLStream as
a raw TLS client where the test needs to see the negotiated cipher or ALPN).
Covered: ``scheme == "https"`` and the ASGI ``tls`` scope extension (server
certificate, TLS version, cipher suite number, client certificate chain and
subject name under ``CERT_REQUIRED``); ALPN settles on ``http/1.1``; the handshake
runs per connection under ``ssl_handshake_timeout`` (a silent client neither
blocks others nor lives past the deadline, nor delays shutdown); plain HTTP or
garbage on a TLS port is closed without an ERROR log; a plain and a TLS server
in one process; TLS over a Unix socket; bad TLS files are a ``ConfigError``
naming the file, raised before lifespan startup.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from _helpers import Recorder, error_records

import trioserve
from trioserve import Config, ConfigError
from trioserve.testing import open_test_server

#: IANA numbers of the cipher suites the default ``ciphers`` and TLS 1.3 allow,
#: by OpenSSL name (RFC 8446 B.4, RFC 5289, RFC 7905).
IANA_CIPHER_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F,
    "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
    "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
}

REQUEST = b"GET /raw HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"


@dataclass
class Pki:
    ca: trustme.CA
    server_cert: trustme.LeafCert
    certfile: Path
    keyfile: Path
    ca_file: Path

    def config(self, **keys: object) -> Config:
        keys.setdefault("bind", ["127.0.0.1:0"])
        return Config(
            certfile=str(self.certfile), keyfile=str(self.keyfile), lifespan="off", **keys
        )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory = tmp_path_factory.mktemp("pki")
    certfile, keyfile, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, cert, certfile, keyfile, ca_file)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def tls_connect(port: int, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname="localhost"
    )
    await stream.do_handshake()
    return stream


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything until EOF; a reset also ends it (what a server that drops a
    connection may produce)."""
    chunks = []
    try:
        while data := await stream.receive_some():
            chunks.append(data)
    except trio.BrokenResourceError:
        pass
    return b"".join(chunks)


def der(pem: str | bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode() if isinstance(pem, bytes) else pem)


# -- scheme and the tls scope extension ---------------------------------------------


async def test_https_request_has_https_scheme_and_tls_extension(pki: Pki) -> None:
    """A naive server passes TLS bytes through but reports ``scheme: http`` and no
    ``tls`` extension, so the app builds wrong absolute URLs and cannot see TLS."""
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, pki.config()) as server:
            [url] = server.urls
            assert url.startswith("https://127.0.0.1:")
            async with httpx.AsyncClient(verify=pki.client_context()) as client:
                response = await client.get(f"https://localhost:{port_of(url)}/secure")
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    [scope] = app.scopes
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert der(tls["server_cert"]) == der(pki.server_cert.cert_chain_pems[0].bytes())
    assert tls["tls_version"] == 0x0304  # httpx and OpenSSL 3 negotiate TLS 1.3
    assert tls["cipher_suite"] in {0x1301, 0x1302, 0x1303}
    assert list(tls["client_cert_chain"]) == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_version_and_cipher_suite_match_what_the_client_negotiated(
    pki: Pki, version: ssl.TLSVersion
) -> None:
    """The cipher suite is the IANA number (0x1302, 0xC02C, ...), not OpenSSL's
    name or its internal id, and matches what the client saw on its side."""
    context = pki.client_context()
    context.maximum_version = version
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, pki.config()) as server:
            stream = await tls_connect(server.port, context)
            client_cipher = stream.cipher()[0]
            await stream.send_all(REQUEST)
            response = await read_until_closed(stream)
            await stream.aclose()
    assert response.startswith(b"HTTP/1.1 200 ")
    tls = app.scopes[0]["extensions"]["tls"]
    assert (
        tls["tls_version"]
        == {ssl.TLSVersion.TLSv1_2: 0x0303, ssl.TLSVersion.TLSv1_3: 0x0304}[version]
    )
    assert tls["cipher_suite"] == IANA_CIPHER_SUITES[client_cipher]


async def test_client_certificate_chain_and_name_reach_the_scope(pki: Pki) -> None:
    """With ``ca_certs`` and ``CERT_REQUIRED`` the verified client certificate is in
    ``client_cert_chain`` (as PEM) and its subject in ``client_cert_name``
    (RFC 4514: most specific attribute first)."""
    client_cert = pki.ca.issue_cert(
        "client@example", common_name="alice", organization_name="Example Org"
    )
    context = pki.client_context()
    client_cert.configure_cert(context)
    app = Recorder()
    config = pki.config(ca_certs=str(pki.ca_file), verify_mode="CERT_REQUIRED")
    with trio.fail_after(5):
        async with (
            open_test_server(app, config) as server,
            httpx.AsyncClient(verify=context) as client,
        ):
            response = await client.get(f"https://localhost:{server.port}/")
    assert response.status_code == 200
    tls = app.scopes[0]["extensions"]["tls"]
    [pem] = tls["client_cert_chain"]
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert der(pem) == der(client_cert.cert_chain_pems[0].bytes())
    name = tls["client_cert_name"]
    assert name.startswith("CN=alice,")
    assert "O=Example Org" in name
    assert tls["client_cert_error"] is None


async def test_client_cert_name_escapes_special_characters(pki: Pki) -> None:
    """RFC 4514 escaping: without it, a comma or plus inside a value forges an
    extra attribute in the name the app parses (``CN=x,O=Admins``)."""
    client_cert = pki.ca.issue_cert(
        "client@example", common_name='#1 "Smith, J." <x>; a+b\\c ', organization_name="Org"
    )
    context = pki.client_context()
    client_cert.configure_cert(context)
    app = Recorder()
    config = pki.config(ca_certs=str(pki.ca_file))
    with trio.fail_after(5):
        async with (
            open_test_server(app, config) as server,
            httpx.AsyncClient(verify=context) as client,
        ):
            assert (await client.get(f"https://localhost:{server.port}/")).status_code == 200
    name = app.scopes[0]["extensions"]["tls"]["client_cert_name"]
    assert name.startswith('CN=\\#1 \\"Smith\\, J.\\" \\<x\\>\\; a\\+b\\\\c\\ ,')
    assert name.endswith(",O=Org")


async def test_client_without_certificate_is_refused_when_required(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """``ca_certs`` alone means ``CERT_REQUIRED``: no certificate, no request. The
    refusal is the client's problem, so nothing is logged as an error."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, pki.config(ca_certs=str(pki.ca_file))) as server:
            stream = trio.SSLStream(
                await trio.open_tcp_stream("127.0.0.1", server.port),
                pki.client_context(),
                server_hostname="localhost",
            )
            # Under TLS 1.3 the client may finish its side of the handshake before
            # the server rejects it; then the refusal shows when it reads.
            try:
                await stream.do_handshake()
                await stream.send_all(REQUEST)
                response = await read_until_closed(stream)
            except trio.BrokenResourceError:
                response = b""
            await trio.aclose_forcefully(stream)
    assert response == b""
    assert app.scopes == []
    assert error_records(caplog) == []


async def test_alpn_settles_on_http11_even_when_the_client_prefers_h2(pki: Pki) -> None:
    """A server without ALPN leaves ``selected_alpn_protocol()`` at None, and some
    clients then assume HTTP/2 is unknown territory; one that echoes the client's
    first choice would get h2 frames it cannot parse."""
    context = pki.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with trio.fail_after(5):
        async with open_test_server(Recorder(), pki.config()) as server:
            stream = await tls_connect(server.port, context)
            selected = stream.selected_alpn_protocol()
            await stream.send_all(REQUEST)
            response = await read_until_closed(stream)
            await stream.aclose()
    assert selected == "http/1.1"
    assert response.startswith(b"HTTP/1.1 200 ")


# -- the handshake runs per connection, under its deadline -----------------------------


async def test_silent_client_is_dropped_at_the_handshake_timeout(pki: Pki) -> None:
    """A client that opens TCP and sends nothing is closed once
    ``ssl_handshake_timeout`` has passed, not before. A server without the
    deadline keeps it forever (the hang guard fires); one that drops at once
    fails the elapsed-time check."""
    with trio.fail_after(5):
        async with open_test_server(Recorder(), pki.config(ssl_handshake_timeout=0.3)) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            start = trio.current_time()
            data = await read_until_closed(stream)
            elapsed = trio.current_time() - start
            await stream.aclose()
    assert data == b""
    assert elapsed >= 0.25


async def test_silent_client_does_not_block_other_connections(pki: Pki) -> None:
    """The handshake happens in the connection's task: while one client sits
    silent for the whole (10 s) handshake timeout, another is served at once. A
    server that handshakes in the accept loop serves nobody until the silent one
    times out (the 5 s hang guard fires first)."""
    with trio.fail_after(5):
        async with open_test_server(Recorder(), pki.config()) as server:
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with httpx.AsyncClient(verify=pki.client_context()) as client:
                response = await client.get(f"https://localhost:{server.port}/")
            assert response.status_code == 200
            await silent.aclose()


async def test_shutdown_does_not_wait_for_a_handshake_in_progress(pki: Pki) -> None:
    """Leaving the server context begins a graceful shutdown (graceful_timeout
    30 s, handshake timeout 10 s). A connection still in its handshake has no
    request to finish, so it is dropped at once instead of holding shutdown up."""
    with trio.fail_after(5):
        async with open_test_server(Recorder(), pki.config()) as server:
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            # Make sure the server has accepted it and is waiting in the handshake:
            # a second connection is accepted after it by the same accept loop.
            async with httpx.AsyncClient(verify=pki.client_context()) as client:
                assert (await client.get(f"https://localhost:{server.port}/")).status_code == 200
        assert await read_until_closed(silent) == b""
        await silent.aclose()


async def test_plain_http_on_a_tls_port_is_closed_without_error_log(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain-HTTP client on the HTTPS port: no HTTP response (the bytes are no
    ClientHello), no app call, no ERROR record (only DEBUG), and the server keeps
    serving TLS clients."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, pki.config()) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(REQUEST)
            data = await read_until_closed(stream)
            await stream.aclose()
            async with httpx.AsyncClient(verify=pki.client_context()) as client:
                response = await client.get(f"https://localhost:{server.port}/after")
    assert not data.startswith(b"HTTP/")
    assert response.status_code == 200
    assert [s["path"] for s in app.scopes] == ["/after"]
    assert error_records(caplog) == []
    assert any("TLS handshake" in r.getMessage() for r in caplog.records)


async def test_garbage_instead_of_client_hello_is_closed_without_error_log(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    with trio.fail_after(5):
        async with open_test_server(Recorder(), pki.config()) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(bytes(range(256)) * 4)
            data = await read_until_closed(stream)
            await stream.aclose()
    assert not data.startswith(b"HTTP/")
    assert error_records(caplog) == []
    [record] = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert record.levelno == logging.DEBUG


# -- plain and TLS side by side; TLS over a Unix socket --------------------------------


async def test_plain_and_tls_servers_in_one_process(pki: Pki) -> None:
    """Two servers in one trio run, one plain and one TLS: each reports its own
    scheme, and only the TLS connection carries the ``tls`` extension (the ASGI
    TLS spec forbids it on plain connections)."""
    plain_app, tls_app = Recorder(), Recorder()
    with trio.fail_after(5):
        async with (
            open_test_server(plain_app, Config(bind=["127.0.0.1:0"], lifespan="off")) as plain,
            open_test_server(tls_app, pki.config()) as secure,
        ):
            assert plain.url.startswith("http://")
            assert secure.url.startswith("https://")
            async with httpx.AsyncClient(verify=pki.client_context()) as client:
                plain_response = await client.get(f"{plain.url}/")
                tls_response = await client.get(f"https://localhost:{secure.port}/")
    assert plain_response.status_code == tls_response.status_code == 200
    assert plain_app.scopes[0]["scheme"] == "http"
    assert "tls" not in plain_app.scopes[0]["extensions"]
    assert tls_app.scopes[0]["scheme"] == "https"
    assert "tls" in tls_app.scopes[0]["extensions"]


async def test_plain_and_tls_binds_in_one_server_with_insecure_bind(pki: Pki) -> None:
    """Hypercorn's insecure_bind: one server, one config, an HTTPS bind and a plain
    one. Without it, certfile/keyfile make every bind TLS, so the plain request
    below would fail its handshake."""
    app = Recorder()
    config = pki.config(bind=["127.0.0.1:0"], insecure_bind=["127.0.0.1:0"])
    with trio.fail_after(5):
        async with open_test_server(app, config) as server:
            secure_url, plain_url = server.urls
            assert secure_url.startswith("https://127.0.0.1:")
            assert plain_url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(verify=pki.client_context()) as client:
                plain_response = await client.get(f"{plain_url}/plain")
                secure_port = secure_url.rsplit(":", 1)[1]
                tls_response = await client.get(f"https://localhost:{secure_port}/secure")
    assert plain_response.status_code == tls_response.status_code == 200
    schemes = {scope["path"]: scope["scheme"] for scope in app.scopes}
    assert schemes == {"/plain": "http", "/secure": "https"}


async def test_tls_over_a_unix_socket(pki: Pki, sock_dir: Path) -> None:
    path = sock_dir / "tls.sock"
    app = Recorder()
    transport = httpx.AsyncHTTPTransport(uds=str(path), verify=pki.client_context())
    with trio.fail_after(5):
        async with open_test_server(app, pki.config(bind=[f"unix:{path}"])) as server:
            assert server.urls == [f"https+unix:{path}"]
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get("https://localhost/over-unix")
    assert response.status_code == 200
    [scope] = app.scopes
    assert scope["scheme"] == "https"
    assert scope["server"] == (str(path), None)
    assert scope["extensions"]["tls"]["tls_version"] == 0x0304


# -- configuration errors ----------------------------------------------------------------


class LifespanProbe:
    """Records whether lifespan startup ran."""

    def __init__(self) -> None:
        self.started = False

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        self.started = True
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})


@pytest.mark.parametrize("broken", ["certfile", "keyfile", "ca_certs"])
async def test_missing_tls_file_is_config_error_naming_it_before_startup(
    pki: Pki, tmp_path: Path, broken: str
) -> None:
    """``serve`` raises a plain ``ConfigError`` (not an exception group) naming the
    missing file, before lifespan startup runs and before anything is bound."""
    missing = tmp_path / f"missing-{broken}.pem"
    keys = {
        "certfile": str(pki.certfile),
        "keyfile": str(pki.keyfile),
        "ca_certs": str(pki.ca_file),
    }
    keys[broken] = str(missing)
    app = LifespanProbe()
    config = Config(bind=["127.0.0.1:0"], lifespan="on", **keys)
    with trio.fail_after(5), pytest.raises(ConfigError) as excinfo:
        await trioserve.serve(app, config)
    message = str(excinfo.value)
    assert broken in message
    assert str(missing) in message
    assert "\n" not in message
    assert not app.started


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("KEY", "no PEM certificate"),  # the key file given as certfile
        (b"\x00\xff\xfe binary", "not a PEM file"),
        ("-----BEGIN CERTIFICATE-----\nabcde\n-----END CERTIFICATE-----\n", "damaged"),
    ],
    ids=["key-only", "binary", "damaged-base64"],
)
async def test_unusable_certfile_content_is_config_error_naming_it(
    pki: Pki, tmp_path: Path, content: str | bytes, problem: str
) -> None:
    certfile = tmp_path / "cert.pem"
    if content == "KEY":
        content = pki.keyfile.read_text()
    if isinstance(content, bytes):
        certfile.write_bytes(content)
    else:
        certfile.write_text(content)
    config = pki.config().replace(certfile=str(certfile))
    with trio.fail_after(5), pytest.raises(ConfigError) as excinfo:
        await trioserve.serve(Recorder(), config)
    assert str(certfile) in str(excinfo.value)
    assert problem in str(excinfo.value)


async def test_ca_certs_without_certificates_is_config_error_naming_it(
    pki: Pki, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not a certificate\n")
    with trio.fail_after(5), pytest.raises(ConfigError) as excinfo:
        await trioserve.serve(Recorder(), pki.config(ca_certs=str(ca_file)))
    message = str(excinfo.value)
    assert message.startswith(f"cannot load ca_certs {str(ca_file)!r}: ")
    assert "\n" not in message


async def test_cipher_string_selecting_nothing_is_config_error(pki: Pki) -> None:
    """Checked when serving starts, not left for every handshake to fail."""
    with trio.fail_after(5), pytest.raises(ConfigError) as excinfo:
        await trioserve.serve(Recorder(), pki.config(ciphers="NO-SUCH-CIPHER"))
    assert str(excinfo.value) == (
        "ciphers 'NO-SUCH-CIPHER' selects no cipher: No cipher can be selected."
    )


async def test_key_that_does_not_match_the_certificate_is_config_error(
    pki: Pki, tmp_path: Path
) -> None:
    other_key = tmp_path / "other-key.pem"
    pki.ca.issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    config = pki.config().replace(keyfile=str(other_key))
    with trio.fail_after(5), pytest.raises(ConfigError) as excinfo:
        await trioserve.serve(Recorder(), config)
    assert str(other_key) in str(excinfo.value)
    assert str(pki.certfile) in str(excinfo.value)


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"certfile": "CERT"}, "keyfile"),  # half a TLS setup would silently serve HTTP
        ({"keyfile": "KEY"}, "certfile"),
        ({"ca_certs": "CA"}, "ca_certs"),  # client certificates without TLS
        ({"certfile": "CERT", "keyfile": "KEY", "verify_mode": "CERT_REQUIRED"}, "ca_certs"),
    ],
)
async def test_incomplete_tls_settings_are_config_error(
    pki: Pki, keys: dict[str, str], named: str
) -> None:
    files = {"CERT": str(pki.certfile), "KEY": str(pki.keyfile), "CA": str(pki.ca_file)}
    config = Config(
        bind=["127.0.0.1:0"], lifespan="off", **{k: files.get(v, v) for k, v in keys.items()}
    )
    with trio.fail_after(5), pytest.raises(ConfigError, match=named):
        await trioserve.serve(Recorder(), config)


async def test_bad_certfile_through_open_test_server_is_a_plain_config_error(
    pki: Pki, tmp_path: Path
) -> None:
    """The testing helper, like ``serve``, raises the ConfigError itself rather
    than an exception group around it."""
    missing = tmp_path / "nope.pem"
    with trio.fail_after(5), pytest.raises(ConfigError, match=r"nope\.pem"):
        async with open_test_server(Recorder(), pki.config().replace(certfile=str(missing))):
            pass  # pragma: no cover - must not be reached
