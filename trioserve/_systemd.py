"""systemd integration: socket activation and ``Type=notify`` readiness.

Both are environment variables and one datagram socket; nothing here needs
libsystemd.

Socket activation
    systemd (or any manager that speaks the same protocol) opens the listening
    sockets and starts the service with them on file descriptors 3, 4, ...;
    ``LISTEN_FDS`` says how many, ``LISTEN_PID`` which process they are for (so
    a child that inherits the environment does not take them too) and
    ``LISTEN_FDNAMES`` their names from the socket unit (``FileDescriptorName=``).
    :func:`take_listen_fds` reads them, marks the descriptors close-on-exec and
    removes the variables from the environment.

Readiness and the watchdog
    With ``NOTIFY_SOCKET`` set, the service reports its state by sending lines
    such as ``READY=1`` or ``STOPPING=1`` in a datagram to that ``AF_UNIX``
    socket (a name starting with ``@`` is in the abstract namespace). With
    ``WATCHDOG_USEC`` set too (and ``WATCHDOG_PID``, if set, naming this
    process), the service must send ``WATCHDOG=1`` more often than that; it does
    so every half of it, from a task of its event loop, so that a loop that is
    blocked stops the pings and the manager restarts the service.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import MutableMapping

import trio

from ._errors import ConfigError

__all__ = ["FIRST_LISTEN_FD", "ListenFd", "Notifier", "parse_listen_fds", "take_listen_fds"]

logger = logging.getLogger("trioserve.error")

#: The first descriptor systemd passes (after stdin, stdout and stderr).
FIRST_LISTEN_FD = 3

ListenFd = tuple[int, str]

_LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _number(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{name} must be a non-negative integer, got {text!r}")
    return int(text)


def parse_listen_fds(environ: MutableMapping[str, str], pid: int) -> list[ListenFd]:
    """The descriptors socket activation passed to process ``pid``, with their names.

    Returns ``[]`` when ``LISTEN_FDS`` is unset, or when ``LISTEN_PID`` names
    another process (the variables were inherited, the sockets are not ours).
    A descriptor without a name in ``LISTEN_FDNAMES`` is named ``unknown``, as
    systemd itself does.

    Raises:
      ConfigError: ``LISTEN_FDS`` or ``LISTEN_PID`` is not a number.
    """
    count_text = environ.get("LISTEN_FDS")
    if count_text is None:
        return []
    count = _number("LISTEN_FDS", count_text)
    pid_text = environ.get("LISTEN_PID")
    if pid_text is not None and _number("LISTEN_PID", pid_text) != pid:
        return []
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    return [
        (FIRST_LISTEN_FD + i, names[i] if i < len(names) and names[i] else "unknown")
        for i in range(count)
    ]


def take_listen_fds(environ: MutableMapping[str, str]) -> list[ListenFd]:
    """:func:`parse_listen_fds` for this process, then make the descriptors
    close-on-exec and remove the ``LISTEN_*`` variables, so that no child process
    (a worker, a program the app runs) takes the sockets for its own.

    Raises:
      ConfigError: a variable is malformed.
    """
    fds = parse_listen_fds(environ, os.getpid())
    for name in _LISTEN_VARIABLES:
        environ.pop(name, None)
    for fd, _ in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ConfigError(
                f"LISTEN_FDS: file descriptor {fd} is not open ({exc.strerror})"
            ) from None
    return fds


def _address(name: str) -> str | None:
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None


class Notifier:
    """Sends state lines to the service manager's ``NOTIFY_SOCKET``.

    Attributes:
      address: the socket address (``"\\0..."`` for an abstract name).
      watchdog_interval: seconds between ``WATCHDOG=1`` pings, or ``None``
          when no watchdog is asked for.
    """

    def __init__(self, address: str, watchdog_interval: float | None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str], pid: int) -> Notifier | None:
        """The notifier ``environ`` asks for, or ``None``; removes the variables
        (a child that sent ``READY=1`` would speak for the service).

        Raises:
          ConfigError: ``WATCHDOG_USEC`` or ``WATCHDOG_PID`` is not a number.
        """
        values = {name: environ.pop(name, None) for name in _NOTIFY_VARIABLES}
        name = values["NOTIFY_SOCKET"]
        if not name:
            return None
        address = _address(name)
        if address is None:
            logger.warning("NOTIFY_SOCKET %r is not a path or @name; not notifying", name)
            return None
        interval = None
        usec = values["WATCHDOG_USEC"]
        watchdog_pid = values["WATCHDOG_PID"]
        if usec is not None and (
            watchdog_pid is None or _number("WATCHDOG_PID", watchdog_pid) == pid
        ):
            microseconds = _number("WATCHDOG_USEC", usec)
            if microseconds > 0:
                interval = microseconds / 2 / 1_000_000
        return cls(address, interval)

    def notify(self, *states: str) -> None:
        """Send ``states`` (e.g. ``"READY=1"``) in one datagram, without blocking.

        A failure is logged once as a warning: the manager going away must not
        take the server down.
        """
        data = "\n".join(states).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(data, socket.MSG_DONTWAIT, self.address)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
                    logger.warning("Cannot notify the service manager: %s", reason)

    async def watchdog(self) -> None:
        """Send ``WATCHDOG=1`` every :attr:`watchdog_interval` seconds, forever."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
