"""TLS for the client layer: a profile's SSL context, and what a connection that failed to set up means.

:func:`ssl_context` turns a profile's ``ssl_*`` keys into the ``ssl.SSLContext`` kmc hands kafka-python, so a
missing CA file or a key that ``ssl_password`` does not open is a configuration error (exit 3) before any
connection, and the key's password never reaches kafka-python's configuration (which it logs).

:func:`explain_close` reads why a connection closed during its set-up and, when the reason is certain,
returns a :class:`TlsError` (exit 5) that names it: a certificate the CA file does not trust, a certificate
for another host, a port that speaks TLS to a plaintext client (found by a TLS probe), a port that does not
speak TLS to a TLS client (found by a plaintext Kafka probe), a client certificate the broker requires or
rejects; or a listener whose SASL settings differ from the profile's (found by a SaslHandshake probe). Anything
else returns None and the client keeps retrying as before. Library code: no printing.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmc.errors import AuthError, ConfigError, KmcError, TlsError
from kmc.profiles import Cluster

PROBE_TIMEOUT = 1.5  # seconds a diagnosis probe may take; a broker answers in milliseconds

# OpenSSL's X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code)
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 28}
_HOSTNAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = {10}
_NOT_YET_VALID = {9}

TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def uses_tls(cluster: Cluster) -> bool:
    return cluster.security_protocol in TLS_PROTOCOLS


def ssl_context(cluster: Cluster, client: Mapping[str, Any] | None = None) -> ssl.SSLContext:
    """The client SSL context of ``cluster``: its CA file (else the system's CAs), its client certificate,
    host name checking unless ``ssl_check_hostname = false``; ``ssl_crlfile`` and ``ssl_ciphers`` from its
    ``client`` table. ConfigError (exit 3) naming the key for a file that cannot be read or used."""
    client = cluster.client if client is None else client
    where = f"{cluster.source}: clusters.{cluster.name}" if cluster.source else f"cluster {cluster.name}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = cluster.ssl_check_hostname
    try:
        if cluster.ssl_cafile:
            context.load_verify_locations(cluster.ssl_cafile)
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.ssl_cafile: cannot use {cluster.ssl_cafile}: {_reason(exc)}",
                          hint="give a PEM file with the CA certificate(s) that signed the brokers' certificates") \
            from None
    if cluster.ssl_certfile:
        password = cluster.ssl_password.reveal() if cluster.ssl_password is not None else None
        try:
            # a callable: an encrypted key with no password configured fails instead of prompting on the tty
            context.load_cert_chain(cluster.ssl_certfile, cluster.ssl_keyfile, password=lambda: password or "")
        except (OSError, ssl.SSLError) as exc:
            # OpenSSL says only "PEM lib" for a wrong password: an encrypted key that did not load is that
            encrypted = isinstance(exc, ssl.SSLError) and _is_encrypted(cluster.ssl_keyfile or cluster.ssl_certfile)
            key = "ssl_password" if encrypted else "ssl_certfile"
            if encrypted and cluster.ssl_password is None:
                detail = "the key is encrypted: set ssl_password or ssl_password_file"
            elif encrypted:
                detail = "the key cannot be decrypted with the configured ssl_password"
            else:
                detail = (f"cannot use {cluster.ssl_certfile} / {cluster.ssl_keyfile or '(key in the same file)'}: "
                          f"{_reason(exc)}")
            raise ConfigError(f"{where}.{key}: {detail}",
                              hint="ssl_certfile is the client certificate (PEM), ssl_keyfile its key, "
                                   "ssl_password (or ssl_password_file) the key's password") from None
    crlfile = client.get("ssl_crlfile")
    if crlfile:
        try:
            context.load_verify_locations(cafile=crlfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}.client.ssl_crlfile: cannot use {crlfile}: {_reason(exc)}") from None
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ciphers = client.get("ssl_ciphers")
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise ConfigError(f"{where}.client.ssl_ciphers: {_reason(exc)}") from None
    return context


def _is_encrypted(path: str) -> bool:
    try:
        return "ENCRYPTED" in Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    return getattr(exc, "reason", None) or str(exc)


# ------------------------------------------------------------------------------------------ diagnosis


def ssl_error_in(error: BaseException | None) -> ssl.SSLError | None:
    """The ssl.SSLError behind ``error`` (itself, its cause or context, or its first argument), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ssl.SSLError):
            return error
        argument = error.args[0] if error.args else None
        if isinstance(argument, ssl.SSLError):
            return argument
        error = error.__cause__ or error.__context__
    return None


def explain_close(cluster: Cluster, host: str, port: int, error: BaseException | None, *,
                  answered: bool, set_up: bool = False) -> AuthError | None:
    """Why a connection to ``host:port`` closed while it was being set up, when the reason is certain: a TLS
    problem (a :class:`TlsError`) or a profile whose SASL settings do not match the listener's (an AuthError).

    ``answered``: the broker answered the connection's first Kafka request (ApiVersions) before it closed,
    so the transport itself worked; ``set_up``: the connection had even completed its set-up (SASL
    included) before it closed. May open probe connections (at most :data:`PROBE_TIMEOUT` each).
    """
    address = f"{host}:{port}"
    name = cluster.name
    if answered:
        return _sasl_mismatch(cluster, host, port, set_up)
    if uses_tls(cluster):
        failure = ssl_error_in(error)
        if failure is not None:
            found = _certificate_problem(cluster, address, host, failure)
            if found is not None:
                return found
        # the handshake did not complete (or the connection closed right after it): a plaintext listener?
        if speaks_plaintext_kafka(host, port):
            return TlsError(f"{name}: {address} does not speak TLS (a plaintext Kafka listener), but the profile's "
                            f"security_protocol is {cluster.security_protocol}",
                            hint="use security_protocol PLAINTEXT or SASL_PLAINTEXT for this port, or the "
                                 "brokers' TLS port")
        return None
    if speaks_tls(host, port):
        return TlsError(f"{name}: {address} speaks TLS, but the profile's security_protocol is "
                        f"{cluster.security_protocol}",
                        hint="use security_protocol SSL (or SASL_SSL with SASL) and ssl_cafile with the brokers' CA")
    return None


def _certificate_problem(cluster: Cluster, address: str, host: str, failure: ssl.SSLError) -> TlsError | None:
    name = cluster.name
    if isinstance(failure, ssl.SSLCertVerificationError):
        code = failure.verify_code
        detail = failure.verify_message or _reason(failure)
        if code in _HOSTNAME_MISMATCH:
            return TlsError(f"{name}: TLS hostname mismatch: the certificate of {address} is not valid for "
                            f"'{host}' ({detail})",
                            hint="connect by a name or address the certificate lists; ssl_check_hostname = false "
                                 "turns this check off (unsafe: anyone with a certificate from that CA can pose "
                                 "as the brokers)")
        if code in _UNTRUSTED:
            source = (f"ssl_cafile {cluster.ssl_cafile} does not" if cluster.ssl_cafile
                      else "the system's CA certificates do not")
            return TlsError(f"{name}: TLS: the certificate of {address} is not trusted: {detail}",
                            hint=f"{source} hold the CA that signed the brokers' certificates; set "
                                 "ssl_cafile to that CA's PEM file")
        if code in _EXPIRED or code in _NOT_YET_VALID:
            return TlsError(f"{name}: TLS: the certificate of {address} {detail}",
                            hint="the brokers' certificate must be renewed (or the clock of this host is wrong)")
        return TlsError(f"{name}: TLS: the certificate of {address} was refused: {detail}",
                        hint="check ssl_cafile and the brokers' certificate")
    text = f"{getattr(failure, 'reason', '') or ''} {failure}".lower()
    refused = any(alert in text for alert in ("unknown_ca", "unknown ca", "bad_certificate", "bad certificate",
                                              "certificate_unknown", "certificate unknown"))
    if "certificate_required" in text or "certificate required" in text or (refused and not cluster.ssl_certfile):
        return TlsError(f"{name}: {address} requires a client certificate (mutual TLS)",
                        hint="set ssl_certfile and ssl_keyfile (and ssl_password or ssl_password_file) in the "
                             "profile")
    if refused:
        return TlsError(f"{name}: {address} rejected the client certificate ({_reason(failure)})",
                        hint="the brokers must trust the CA that signed ssl_certfile")
    if "wrong_version_number" in text or "wrong version number" in text or "record layer failure" in text:
        return TlsError(f"{name}: {address} does not speak TLS, but the profile's security_protocol is "
                        f"{cluster.security_protocol}",
                        hint="use security_protocol PLAINTEXT or SASL_PLAINTEXT for this port, or the brokers' "
                             "TLS port")
    return None


def _sasl_mismatch(cluster: Cluster, host: str, port: int, set_up: bool) -> AuthError | None:
    offered = sasl_mechanisms(cluster, host, port)
    address = f"{host}:{port}"
    if offered is None:
        return None
    secure = "SASL_SSL" if uses_tls(cluster) else "SASL_PLAINTEXT"
    if cluster.sasl_mechanism is None and offered:
        return AuthError(f"{cluster.name}: {address} expects SASL authentication ({', '.join(offered)}), but the "
                         f"profile's security_protocol is {cluster.security_protocol}",
                         hint=f"use security_protocol {secure} with sasl_mechanism, username and password")
    if cluster.sasl_mechanism is not None and not offered:
        plain = "SSL" if uses_tls(cluster) else "PLAINTEXT"
        return AuthError(f"{cluster.name}: {address} does not use SASL, but the profile's security_protocol is "
                         f"{cluster.security_protocol}", hint=f"use security_protocol {plain}")
    if cluster.sasl_mechanism is not None and cluster.sasl_mechanism not in offered:
        return AuthError(f"{cluster.name}: {address} does not offer SASL mechanism {cluster.sasl_mechanism} "
                         f"(it offers {', '.join(offered)})", hint="set sasl_mechanism to one it offers")
    if cluster.sasl_mechanism is not None and not set_up:
        # the listener takes this mechanism, yet closed the connection while it authenticated
        return AuthError(f"{cluster.name}: authentication failed: {address} closed the connection during "
                         f"{cluster.sasl_mechanism} authentication as {cluster.username}",
                         hint="check the username and password of the profile")
    return None


def sasl_mechanisms(cluster: Cluster, host: str, port: int, timeout: float = PROBE_TIMEOUT) -> tuple[str, ...] | None:
    """The SASL mechanisms the listener at ``host:port`` offers (empty: it does not use SASL), asked with a
    SaslHandshake request over the profile's transport (TLS with its SSL context, or plaintext); None when
    that cannot be told."""
    request_mechanism = b"PLAIN"
    correlation_id = 0x6B6D64
    client_id = b"kmc-probe"
    body = (struct.pack(">hhih", 17, 1, correlation_id, len(client_id)) + client_id
            + struct.pack(">h", len(request_mechanism)) + request_mechanism)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if uses_tls(cluster):
                sock = ssl_context(cluster).wrap_socket(raw, server_hostname=host)
            try:
                sock.sendall(struct.pack(">i", len(body)) + body)
                header = _read_exactly(sock, 4)
                if header is None:
                    return None
                (size,) = struct.unpack(">i", header)
                if not 6 <= size < 1 << 16:
                    return None
                payload = _read_exactly(sock, size)
            finally:
                if sock is not raw:
                    sock.close()
    except (OSError, KmcError):
        return None
    if payload is None:
        return None
    answered_id, error_code = struct.unpack(">ih", payload[:6])
    if answered_id != correlation_id:
        return None
    if error_code == 34:  # ILLEGAL_SASL_STATE: a listener without SASL answers the handshake with this
        return ()
    if error_code not in (0, 33):  # 33: UNSUPPORTED_SASL_MECHANISM, with the list of those it supports
        return None
    mechanisms = []
    offset = 6
    (count,) = struct.unpack(">i", payload[offset:offset + 4])
    offset += 4
    for _ in range(max(0, count)):
        (length,) = struct.unpack(">h", payload[offset:offset + 2])
        offset += 2
        mechanisms.append(payload[offset:offset + length].decode("utf-8", "replace"))
        offset += length
    return tuple(mechanisms)


def speaks_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``host:port`` completes a TLS handshake (certificates not checked: only the protocol)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as wrapped:
            return wrapped.version() is not None
    except ssl.SSLError as exc:
        # a TLS alert (e.g. "certificate required") is TLS speaking too; a garbled reply is not
        text = str(exc).lower()
        return "alert" in text
    except OSError:
        return False


def speaks_plaintext_kafka(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``host:port`` answers a plaintext ApiVersions (v0) request like a Kafka broker."""
    correlation_id = 0x6B6D63  # "kmc"
    client_id = b"kmc-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read_exactly(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    size, answered_id = struct.unpack(">ii", header)
    return answered_id == correlation_id and 0 < size < 1 << 20


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
