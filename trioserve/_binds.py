"""Parsing of ``bind`` strings: pure code, no I/O and no trio.

:class:`~trioserve.Config` validates every bind with :func:`parse_bind` when it is
made, and :mod:`trioserve._listeners` opens what the parsed form describes; keeping
the parser here lets Config stay cheap to import and to construct (nothing is bound
or even resolved while validating).

The forms:

=================  ===========================================================
``HOST:PORT``      TCP; an empty ``HOST`` means every interface; port 0 picks a
                   free port
``[IPv6]:PORT``    TCP over IPv6, e.g. ``[::1]:8000``
``unix:PATH``      a Unix domain socket at ``PATH`` (created, removed on exit)
``fd://N``         an inherited listening socket on file descriptor ``N``
                   (systemd socket activation, a supervisor that binds first)
=================  ===========================================================
"""

from __future__ import annotations

import dataclasses

from ._errors import ConfigError

__all__ = ["Bind", "FdBind", "TCPBind", "UnixBind", "parse_bind"]


@dataclasses.dataclass(frozen=True)
class TCPBind:
    """``HOST:PORT``: ``host`` is ``""`` for every interface, without brackets for IPv6."""

    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class UnixBind:
    """``unix:PATH``."""

    path: str


@dataclasses.dataclass(frozen=True)
class FdBind:
    """``fd://N``."""

    fd: int


Bind = TCPBind | UnixBind | FdBind

_UNIX_PREFIX = "unix:"
_FD_PREFIX = "fd://"


def parse_bind(bind: str) -> Bind:
    """Parse one ``bind`` string into the address it describes.

    Args:
      bind: ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH`` or ``fd://N``.

    Returns:
      A :class:`TCPBind`, :class:`UnixBind` or :class:`FdBind`.

    Raises:
      ConfigError: the string is none of these forms; the message quotes it.
    """
    if bind.startswith(_UNIX_PREFIX):
        path = bind[len(_UNIX_PREFIX) :]
        if not path or "\0" in path:
            raise ConfigError(f"bind {bind!r} must be unix:PATH with a non-empty path")
        return UnixBind(path)
    if bind.startswith(_FD_PREFIX):
        fd_text = bind[len(_FD_PREFIX) :]
        # isdigit() accepts non-ASCII digits that int() also takes; a file
        # descriptor is only ever written in ASCII, so insist on that.
        if not (fd_text.isascii() and fd_text.isdigit()):
            raise ConfigError(f"bind {bind!r} must be fd://N with a file descriptor number N")
        return FdBind(int(fd_text))
    host, sep, port_text = bind.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"bind {bind!r}: write IPv6 addresses in brackets, like [::1]:8000")
    if (
        not sep
        or not (port_text.isascii() and port_text.isdigit())
        or not 0 <= int(port_text) <= 65535
    ):
        raise ConfigError(
            f"bind {bind!r} must be HOST:PORT (port 0..65535), [IPv6]:PORT, unix:PATH or fd://N"
        )
    return TCPBind(host, int(port_text))
