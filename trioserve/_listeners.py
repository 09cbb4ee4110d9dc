"""Binds to listeners, and the accept loop that turns accepted streams into
connections.

This layer reads the peer and local addresses off each accepted socket and hands
them to the connection as plain parameters, so the connection code runs the same
over in-memory streams. (Beyond it, only the transport's stream class for plain
sockets, :class:`trioserve._transport.SocketFdStream`, and the PROXY protocol's
reader, :class:`trioserve._proxy_protocol.ProxyHeaderReader`, touch a socket.)

Theory of operation
-------------------

Each ``bind`` string (parsed by the pure :func:`trioserve._binds.parse_bind`) gives
one or more listeners:

``HOST:PORT``, ``[IPv6]:PORT``
    :func:`trio.open_tcp_listeners`; a host name may resolve to several addresses,
    hence several listeners.
``unix:PATH``
    A :class:`UnixSocketListener`, which owns the socket file: it clears a stale
    file left by a server that died, refuses to take over a live one, creates the
    file (mode 0o666, or under ``Config.umask`` when that is set) and removes it
    again when closed.
``fd://N``
    A :class:`trio.SocketListener` over an inherited, already listening socket
    (systemd socket activation, a supervisor that bound it). The listener owns the
    descriptor from then on and closes it on shutdown.

With TLS configured, every listener is wrapped in a :class:`TLSListener`, whose
``accept`` returns an :class:`trio.SSLStream` *before* the handshake: the handshake
reads from the client, so it runs in the connection's own task
(:func:`tls_handshake`), under a ``ssl_handshake_timeout`` cancel scope. Were it in the accept
loop, one client that opens a TCP connection and says nothing would stall
accepting for everyone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, final

import trio

from ._binds import FdBind, TCPBind, UnixBind, parse_bind
from ._errors import BindError
from ._tls import ServerTLS, create_server_tls

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "Address",
    "ServerAddress",
    "TLSListener",
    "UnixSocketListener",
    "accept_loop",
    "describe_client",
    "listener_url",
    "open_listeners",
    "open_listeners_with_tls",
    "tls_handshake",
]

error_logger = logging.getLogger("trioserve.error")

#: accept() errors that mean "out of resources for now", not "broken listener".
#: (Per-connection errors such as ECONNABORTED never get here: trio's
#: SocketListener.accept retries those itself.)
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Pause before accepting again after such an error.
_ACCEPT_BACKOFF = 0.1
# The name of every connection's task, a constant: trio would otherwise make a new
# string for each (an idle connection's memory counts).
CONNECTION_TASK_NAME = "trioserve.connection"

#: The mask a ``unix:`` socket file is created under when ``Config.umask`` is unset:
#: the file comes out 0o666, connectable by every local user.
_DEFAULT_SOCKET_UMASK = 0o111

#: ``socket.AF_UNIX``, or ``None`` on a platform without Unix domain sockets.
_AF_UNIX: int | None = getattr(socket, "AF_UNIX", None)

#: A TCP peer or local address: ``(host, port)``.
Address = tuple[str, int]
#: ``scope["server"]``: ``(host, port)``, or ``(path, None)`` for a Unix socket
#: (ASGI HTTP spec, "server").
ServerAddress = tuple[str, int | None]

StreamT = TypeVar("StreamT", bound=trio.abc.Stream)
AnyListener = trio.abc.Listener[trio.abc.Stream]


@final
class UnixSocketListener(trio.abc.Listener[trio.SocketStream]):
    """A listener on a Unix domain socket file that it created and removes.

    Attributes:
      path: the socket file.
      socket_listener: the underlying :class:`trio.SocketListener`.
    """

    def __init__(self, socket_listener: trio.SocketListener, path: str) -> None:
        self.socket_listener = socket_listener
        self.path = path
        # Remember which file we made: if another server replaced the path in the
        # meantime, closing must not delete *its* socket.
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    async def accept(self) -> trio.SocketStream:
        """Accept a connection."""
        return await self.socket_listener.accept()

    async def aclose(self) -> None:
        """Close the socket, then remove the socket file if it is still ours."""
        try:
            await self.socket_listener.aclose()
        finally:
            self._unlink()

    def _unlink(self) -> None:
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Not worth failing shutdown over; the next start clears a stale file.
            error_logger.warning("could not remove the socket file %s: %s", self.path, exc)


@final
class TLSListener(trio.abc.Listener[trio.SSLStream[trio.abc.Stream]]):
    """Wraps every stream a listener accepts in a server-side :class:`trio.SSLStream`.

    ``accept`` does not handshake (see :func:`tls_handshake`).

    Attributes:
      transport_listener: the wrapped listener.
      tls: the server's TLS setup.
    """

    def __init__(self, transport_listener: AnyListener, tls: ServerTLS) -> None:
        self.transport_listener = transport_listener
        self.tls = tls

    async def accept(self) -> trio.SSLStream[trio.abc.Stream]:
        """Accept a connection; its handshake is still to be done."""
        stream = await self.transport_listener.accept()
        # https_compatible: HTTP clients routinely close without close_notify,
        # which must read as an ordinary EOF, not a broken stream.
        return trio.SSLStream(stream, self.tls.context, server_side=True, https_compatible=True)

    async def aclose(self) -> None:
        """Close the wrapped listener."""
        await self.transport_listener.aclose()


async def open_listeners(config: Config) -> list[AnyListener]:
    """Open a listener for every configured bind, wrapped in TLS when ``certfile``
    and ``keyfile`` are set.

    Raises:
      ConfigError: the TLS files cannot be loaded (nothing is bound then).
      BindError: an address could not be bound (in use, permission denied, ...).
    """
    return await open_listeners_with_tls(config, create_server_tls(config))


async def open_listeners_with_tls(config: Config, tls: ServerTLS | None) -> list[AnyListener]:
    """Open a listener for every configured bind, wrapped in ``tls`` if given.

    Resource handling:
      If one bind fails, the listeners already opened are closed (and their socket
      files removed) before the error propagates.

    Raises:
      BindError: an address could not be bound (in use, permission denied, a bad
          file descriptor, ...); ``errno`` is the underlying error's.
    """
    listeners: list[AnyListener] = []
    try:
        for bind in config.bind:
            opened = await _open_bind(bind, config)
            listeners.extend([TLSListener(lst, tls) for lst in opened] if tls else opened)
        # Hypercorn's insecure_bind: plain HTTP next to the TLS binds, in one server.
        for bind in config.insecure_bind:
            listeners.extend(await _open_bind(bind, config))
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


async def _open_bind(bind: str, config: Config) -> list[AnyListener]:
    spec = parse_bind(bind)
    if isinstance(spec, TCPBind):
        return [*await _open_tcp(bind, spec, config.backlog)]
    if isinstance(spec, UnixBind):
        return [await _open_unix(bind, spec, config.backlog, config.umask)]
    return [_open_fd(bind, spec)]


async def _open_tcp(bind: str, spec: TCPBind, backlog: int) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(spec.port, host=spec.host or None, backlog=backlog)
    except OSError as exc:
        raise BindError(exc.errno, f"cannot bind {bind}: {exc.strerror or exc}") from exc


async def _open_unix(
    bind: str, spec: UnixBind, backlog: int, umask: int | None
) -> UnixSocketListener:
    if _AF_UNIX is None:  # pragma: no cover - Windows without AF_UNIX
        raise BindError(errno.EAFNOSUPPORT, f"cannot bind {bind}: no Unix sockets here")
    path = spec.path
    await _clear_stale_socket(bind, path)
    sock = socket.socket(_AF_UNIX, socket.SOCK_STREAM)
    try:
        # Connecting to a socket file needs write permission on it. Unless
        # ``umask`` says otherwise, the file is made 0o666: a proxy running as
        # another local user (nginx's worker user) must be able to connect, and
        # who may reach the socket is then decided by the directory it is in.
        # The umask is process-wide, so set it for exactly the bind() call, which
        # creates the file with its final mode: no await in between, so no other
        # task of ours runs under it (another *thread* creating a file in that
        # instant would), and no moment when the file has another mode.
        old_umask = os.umask(_DEFAULT_SOCKET_UMASK if umask is None else umask)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
    except OSError as exc:  # ENOENT/ENOTDIR: no such directory; path too long; ...
        sock.close()
        raise BindError(exc.errno, f"cannot bind {bind}: {exc.strerror or exc}") from exc
    # From here on the socket file exists and is ours to remove.
    try:
        sock.listen(backlog)
        return UnixSocketListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), path)
    except BaseException:  # pragma: no cover - listen() on a fresh socket does not fail
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


async def _clear_stale_socket(bind: str, path: str) -> None:
    """Remove ``path`` if it is a socket file nobody listens on any more.

    Raises:
      BindError: a server is listening on it, or it is not a socket.
    """
    try:
        # lstat: a symlink at the path is not ours to follow or delete.
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(exc.errno, f"cannot bind {bind}: {exc.strerror or exc}") from exc
    if not stat.S_ISSOCK(mode):
        raise BindError(errno.EEXIST, f"cannot bind {bind}: {path} exists and is not a socket")
    assert _AF_UNIX is not None  # _open_unix checked
    with trio.socket.socket(_AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            await probe.connect(path)
        except ConnectionRefusedError:
            pass  # stale: left behind by a server that did not clean up
        except FileNotFoundError:  # pragma: no cover - removed since the lstat()
            return
        except OSError as exc:
            raise BindError(
                exc.errno, f"cannot bind {bind}: cannot probe {path}: {exc.strerror or exc}"
            ) from exc
        else:
            raise BindError(
                errno.EADDRINUSE, f"cannot bind {bind}: address in use (a server listens on {path})"
            )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _open_fd(bind: str, spec: FdBind) -> trio.SocketListener:
    try:
        # Takes over the descriptor: closing the listener closes it.
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:  # EBADF: not open; ENOTSOCK: not a socket
        raise BindError(exc.errno, f"cannot use {bind}: {exc.strerror or exc}") from exc
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = "not a stream socket"
    else:
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:  # pragma: no cover - macOS has no SO_ACCEPTCONN; trust the caller
            listening = 1
        if not listening:
            problem = "not a listening socket (call listen() before passing it)"
    if problem is not None:
        # Refused, so not ours: give the descriptor back untouched.
        sock.detach()
        raise BindError(errno.EINVAL, f"cannot use {bind}: file descriptor {spec.fd} is {problem}")
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def listener_url(listener: trio.abc.Listener[trio.abc.Stream], scheme: str) -> str:
    """The URL a listener serves, e.g. ``http://127.0.0.1:8000``.

    A :class:`TLSListener` serves ``https``. A Unix socket is reported as
    ``unix:PATH`` (``https+unix:PATH`` with TLS), the form ``bind`` takes.
    """
    if isinstance(listener, TLSListener):
        return listener_url(listener.transport_listener, "https")
    if isinstance(listener, UnixSocketListener):
        listener = listener.socket_listener
    if isinstance(listener, trio.SocketListener):
        sock = listener.socket
        if sock.family == _AF_UNIX:
            path = _unix_path(sock.getsockname())
            return f"unix:{path}" if scheme == "http" else f"{scheme}+unix:{path}"
        host, port = sock.getsockname()[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{type(listener).__name__}"


def _unix_path(name: str | bytes) -> str:
    # Linux gives abstract-namespace names (leading NUL) as bytes.
    return os.fsdecode(name) if isinstance(name, bytes) else name


def _addresses(stream: trio.abc.Stream) -> tuple[Address | None, ServerAddress | None]:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        sock = stream.socket
        if sock.family == _AF_UNIX:
            # The peer of a Unix socket is normally unnamed (''): no client address.
            path = _unix_path(sock.getsockname())
            return None, ((path, None) if path else None)
        peer = sock.getpeername()
        local = sock.getsockname()
        return (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))
    return None, None


async def accept_loop(
    listener: trio.abc.Listener[StreamT],
    nursery: trio.Nursery,
    handler: Callable[[StreamT, Address | None, ServerAddress | None], Awaitable[None]],
) -> None:
    """Accept connections forever, starting ``handler(stream, client, server)`` for
    each in ``nursery`` (the connection nursery, which outlives this loop so that
    in-flight connections survive the end of accepting)."""
    starved = False
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            # Out of file descriptors or memory: accepting again at once would spin.
            # Said once per episode at ERROR; the retries every 0.1 s at DEBUG.
            log = error_logger.debug if starved else error_logger.error
            log("accept() failed: %s; pausing before accepting again", exc)
            starved = True
            await trio.sleep(_ACCEPT_BACKOFF)
            continue
        if starved:
            error_logger.info("accept() works again")
            starved = False
        try:
            client, server = _addresses(stream)
        except OSError:
            # The peer left before we looked (ENOTCONN): nothing to serve.
            await trio.aclose_forcefully(stream)
            continue
        nursery.start_soon(handler, stream, client, server, name=CONNECTION_TASK_NAME)


async def tls_handshake(
    stream: trio.SSLStream[Any], tls: ServerTLS, client: Address | None
) -> dict[str, object] | None:
    """Complete the server side of the TLS handshake on ``stream``.

    The caller bounds it with ``ssl_handshake_timeout`` (a cancel scope around
    this call) and closes ``stream`` when no extension comes back.

    Returns:
      The ASGI ``tls`` scope extension, or ``None`` if the handshake failed.

    Error handling:
      A failed handshake (a plain-HTTP client, garbage, an unacceptable client
      certificate, a hang-up) is the client's business and is logged at DEBUG
      only: any port scanner would otherwise fill the error log.
    """
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        error_logger.debug(
            "TLS handshake with %s failed: %s", describe_client(client), exc.__cause__ or exc
        )
        return None
    return tls.scope_extension(stream)


def describe_client(client: Address | None) -> str:
    """``host:port`` of a client for log messages."""
    return f"{client[0]}:{client[1]}" if client else "a client"
