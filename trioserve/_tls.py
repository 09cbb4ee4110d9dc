"""TLS: the server's :class:`ssl.SSLContext` made from :class:`~trioserve.Config`,
and the ASGI ``tls`` scope extension of a finished handshake.

Nothing here touches the network. :func:`create_server_tls` reads the certificate
files once, when the server starts, so that a wrong path or password is a
:class:`~trioserve.ConfigError` before any port is bound; the handshake itself runs
in each connection's own task (:func:`trioserve._listeners.tls_handshake`).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError

if TYPE_CHECKING:
    import trio

    from ._config import Config

__all__ = ["ServerTLS", "create_server_tls"]

#: ALPN protocols offered; trioserve speaks HTTP/1.1 only, so a client that offers
#: ``h2`` first still settles on ``http/1.1`` instead of speaking h2 at us.
ALPN_PROTOCOLS = ["http/1.1"]

_VERIFY_MODES = {
    "CERT_NONE": ssl.CERT_NONE,
    "CERT_OPTIONAL": ssl.CERT_OPTIONAL,
    "CERT_REQUIRED": ssl.CERT_REQUIRED,
}

#: ``SSLObject.version()`` names → the protocol version numbers of the TLS RFCs,
#: which the ASGI TLS extension reports.
_TLS_VERSIONS = {
    "SSLv3": 0x0300,
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}

#: OpenSSL's long attribute names (as ``getpeercert()`` reports them) → the short
#: names RFC 4514 section 3 defines.
_RFC4514_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}

_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """What a TLS listener needs: the context, plus what the ``tls`` scope extension
    reports that the context cannot tell us afterwards.

    Attributes:
      context: the server-side SSL context.
      server_cert: the PEM of the server's own (leaf) certificate.
      cipher_suites: OpenSSL cipher name → IANA cipher suite number, for every
          cipher the context may negotiate.
    """

    context: ssl.SSLContext
    server_cert: str
    cipher_suites: Mapping[str, int]

    def scope_extension(self, stream: trio.SSLStream[Any]) -> dict[str, object]:
        """The ASGI ``tls`` extension for a connection whose handshake is done.

        Follows https://asgi.readthedocs.io/en/latest/specs/tls.html with two
        limits of Python's :mod:`ssl` module:

        - ``client_cert_chain`` holds only the client's own certificate: before
          Python 3.13 ``ssl`` does not expose the intermediates the client sent.
        - ``client_cert_name`` is built from the decoded subject, which ``ssl``
          gives only for a verified certificate (``CERT_OPTIONAL`` or
          ``CERT_REQUIRED``); attributes without an RFC 4514 short name keep
          OpenSSL's long name (``emailAddress=...``) instead of a dotted OID.

        ``client_cert_error`` is always ``None``: a certificate that fails
        verification fails the handshake, so no request ever sees it.
        """
        # SSLStream forwards these to its ssl.SSLObject (typed Any there).
        der: bytes | None = stream.getpeercert(binary_form=True)
        cipher: tuple[str, str, int] | None = stream.cipher()
        version: str | None = stream.version()
        return {
            "server_cert": self.server_cert,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": _subject_name(stream.getpeercert()) if der else None,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(version) if version else None,
            "cipher_suite": self.cipher_suites.get(cipher[0]) if cipher else None,
        }


def create_server_tls(config: Config) -> ServerTLS | None:
    """Build the server's TLS setup from ``config``; ``None`` when TLS is off.

    TLS is on when ``certfile`` and ``keyfile`` are set. The context allows TLS 1.2
    and later, offers ALPN ``http/1.1``, uses ``ciphers`` for TLS 1.2, and asks for
    client certificates according to ``verify_mode`` (default: required when
    ``ca_certs`` is set, else not asked for).

    Raises:
      ConfigError: only one of ``certfile``/``keyfile`` is set, ``ca_certs`` is set
          without them, ``verify_mode`` asks for client certificates without
          ``ca_certs``, ``ciphers`` selects nothing, or a file cannot be read or
          used (the message names it).
    """
    if config.certfile is None and config.keyfile is None:
        if config.ca_certs is not None:
            raise ConfigError("ca_certs is set, but TLS is off: set certfile and keyfile too")
        return None
    if config.certfile is None or config.keyfile is None:
        # Serving plain HTTP because half the TLS settings are missing would be a
        # silent downgrade; refuse instead.
        missing = "certfile" if config.certfile is None else "keyfile"
        raise ConfigError(f"TLS needs both certfile and keyfile; {missing} is not set")

    if config.verify_mode is None:
        verify_mode = ssl.CERT_REQUIRED if config.ca_certs is not None else ssl.CERT_NONE
    else:
        verify_mode = _VERIFY_MODES[config.verify_mode]
        if verify_mode != ssl.CERT_NONE and config.ca_certs is None:
            # Without CA certificates no client certificate can ever verify: every
            # handshake would fail (with CERT_OPTIONAL, every one that sends one).
            raise ConfigError(
                f"verify_mode {config.verify_mode} needs ca_certs to verify client certificates"
            )

    # Read the files ourselves first: OpenSSL's errors do not say which file of
    # the pair is missing or unreadable.
    server_cert = _first_certificate(config.certfile)
    _check_readable("keyfile", config.keyfile)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.certfile, config.keyfile, password=config.keyfile_password)
    except (OSError, ValueError) as exc:
        # SSLError (an OSError): the key does not match the certificate, a wrong
        # password, not PEM; ValueError: an over-long password.
        raise ConfigError(
            f"cannot use certfile {config.certfile!r} with keyfile {config.keyfile!r}: "
            f"{_reason(exc)}"
        ) from exc
    if config.ca_certs is not None:
        _check_readable("ca_certs", config.ca_certs)
        try:
            context.load_verify_locations(cafile=config.ca_certs)
        except OSError as exc:
            raise ConfigError(f"cannot load ca_certs {config.ca_certs!r}: {_reason(exc)}") from exc
    context.verify_mode = verify_mode
    try:
        context.set_ciphers(config.ciphers)
    except ssl.SSLError as exc:
        raise ConfigError(f"ciphers {config.ciphers!r} selects no cipher: {_reason(exc)}") from exc
    context.set_alpn_protocols(ALPN_PROTOCOLS)

    # OpenSSL's cipher ids carry the IANA number in their low 16 bits
    # (0x0300C02F is TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, 0xC02F); Python offers
    # no other way to get that number for the negotiated cipher.
    suites = {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}
    return ServerTLS(context, server_cert, suites)


def _check_readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {key} {path!r}: {_reason(exc)}") from exc


def _first_certificate(certfile: str) -> str:
    """The first certificate in ``certfile`` (the leaf of the chain), as PEM."""
    try:
        with open(certfile, encoding="ascii") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read certfile {certfile!r}: {_reason(exc)}") from exc
    except ValueError as exc:  # UnicodeDecodeError: not a PEM file at all
        raise ConfigError(f"certfile {certfile!r} is not a PEM file") from exc
    start = text.find(_PEM_BEGIN)
    end = text.find(_PEM_END, start)
    if start < 0 or end < 0:
        raise ConfigError(f"certfile {certfile!r} holds no PEM certificate")
    try:
        # Round-trip through DER so that the PEM has the standard layout whatever
        # line lengths or stray whitespace the file has.
        der = ssl.PEM_cert_to_DER_cert(text[start : end + len(_PEM_END)])
    except ValueError as exc:  # binascii.Error: the base64 body is damaged
        raise ConfigError(f"certfile {certfile!r} holds a damaged PEM certificate") from exc
    return ssl.DER_cert_to_PEM_cert(der)


def _reason(exc: Exception) -> str:
    """A one-line reason: OpenSSL's messages can span lines or be empty."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        # SSLError("No cipher can be selected.") prints as a tuple: take the text.
        text = str(exc.args[-1]) if exc.args else ""
    return " ".join(text.split()) or type(exc).__name__


def _subject_name(cert: Mapping[str, Any]) -> str:
    """The RFC 4514 string of a decoded certificate's subject (last RDN first)."""
    return ",".join(
        "+".join(f"{_RFC4514_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        for rdn in reversed(cert.get("subject", ()))
    )


#: Characters RFC 4514 section 2.4 escapes anywhere in a value.
_RFC4514_ESCAPES = str.maketrans({**{c: "\\" + c for c in ',+"\\<>;'}, "\0": "\\00"})


def _escape(value: str) -> str:
    """Escape an attribute value as RFC 4514 section 2.4 requires."""
    escaped = value.translate(_RFC4514_ESCAPES)
    # A space is escaped only at either end, a "#" only at the start.
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    return escaped
