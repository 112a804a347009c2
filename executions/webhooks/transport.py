"""The SSRF-checked HTTP transport of webhooks: address checks and a POST pinned to them.

Only http(s); the host is resolved once, every address must be public (not loopback,
private, link-local, reserved, multicast, unspecified, the metadata addresses
169.254.169.254 and fd00:ec2::254, nor any other address that is not global, such as the
shared address space 100.64.0.0/10) unless the host name or a CIDR holding the address is in
``EXECUTIONS["WEBHOOK_ALLOWLIST"]``; the connection goes to that checked address (no second
lookup an attacker's DNS could change), with the original Host header and, for https, the
original name for SNI and the certificate check. Redirects are never followed; timeouts and
the response size are bounded. A URL whose host is an address itself is also checked when it
is submitted (``check_literal_host``), by the same rule; a host name can only be checked
here, since what it resolves to may change.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from executions.conf import execution_settings

USER_AGENT = "evalplatform-webhooks/1"
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The callback URL may not be reached; the message says why."""


def _allowlisted(host: str, address: IPAddress) -> bool:
    for entry in execution_settings.WEBHOOK_ALLOWLIST:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _forbidden_reason(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside an IPv6 one (mapped, or 6to4 which routes to it) is
        # judged as that IPv4 address.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return _forbidden_reason(embedded)
        if address.is_site_local:
            return "a site-local address"
    if address in METADATA_ADDRESSES:
        return "the cloud metadata address"
    checks = [
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a private", address.is_private),
        ("a multicast", address.is_multicast),
        ("a reserved", address.is_reserved),
    ]
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if not address.is_global:
        # What no class above names but is not routed on the internet either, such as the
        # shared address space 100.64.0.0/10 (carrier-grade NAT; Alibaba Cloud's metadata
        # service answers at 100.100.100.200).
        return "not a public address"
    return ""


def check_address(host: str, address: IPAddress) -> None:
    """Raise ``Refused`` unless a webhook may reach ``address`` (which ``host``, a name or
    the address itself, stands for). The one rule, at submission and at each delivery."""
    reason = _forbidden_reason(address)
    if not reason or _allowlisted(host, address):
        return
    where = f"{address} is" if host == str(address) else f"{host!r} resolves to {address},"
    raise Refused(
        f"{where} {reason}; webhooks may not reach it unless an admin adds the host or "
        "network to EXECUTION_WEBHOOK_ALLOWLIST."
    )


def literal_addresses(host: str) -> list[IPAddress]:
    """The addresses ``host`` stands for when it is a numeric address, in any spelling the
    resolver reads as one (``2130706433``, ``0x7f.1``, ``127.1``, full-width digits), and
    ``[]`` for a name. No lookup is made: the system resolver parses the text, so the answer
    is the address a delivery would connect to."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return []
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def check_literal_host(url: str) -> None:
    """Raise ``Refused`` when ``url``'s host is an address a delivery would refuse; say
    nothing of host names (they are checked when resolved, at delivery) nor of the rest of
    the URL (the caller validates its syntax)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return
    if not host:
        return
    for address in literal_addresses(host):
        check_address(host, address)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


def resolve_target(url: str) -> Target:
    """Check ``url`` and pick the address to connect to; raise ``Refused`` saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise Refused(f"Only http and https callback URLs are allowed, not {parts.scheme!r}.")
    host = parts.hostname
    if not host:
        raise Refused("The callback URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"The callback URL's port is invalid: {exc}.") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"Cannot resolve {host!r}: {exc}.") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise Refused(f"{host!r} has no address.")
    for address in addresses:
        # Every address must pass: a name resolving to one public and one private address
        # must not reach the private one on a later connection.
        check_address(host, address)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, str(addresses[0]))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with SNI and certificate checks for the original host."""

    def __init__(self, address: str, server_name: str, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(sock, server_hostname=self._server_name)


@dataclass(frozen=True)
class Response:
    status_code: int
    body: bytes


def post(target: Target, body: bytes, headers: dict[str, str], timeout_s: float) -> Response:
    """POST to the checked address; a redirect is returned as it is, never followed.

    Connecting and sending each wait at most ``timeout_s``, and the whole answer (status,
    headers and the body up to the cap) must arrive within ``timeout_s`` of the request: a
    receiver that drips its answer a byte at a time cannot hold the worker. Raises
    ``TimeoutError`` (an ``OSError``) past that deadline.
    """
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(
            target.address, target.host, port=target.port, timeout=timeout_s
        )
    else:
        connection = http.client.HTTPConnection(target.address, target.port, timeout=timeout_s)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != default_port:
        host_header += f":{target.port}"
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Host": host_header,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                **headers,
            },
        )
        # Each read waits at most timeout_s; this bounds them all together.
        cut = threading.Event()
        deadline = threading.Timer(timeout_s, _hang_up, args=(connection.sock, cut))
        deadline.start()
        try:
            answer = connection.getresponse()
            # Only the start of the answer is read: a receiver cannot make us buffer gigabytes.
            data = answer.read(execution_settings.WEBHOOK_MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException):
            if cut.is_set():
                raise TimeoutError(_too_slow(timeout_s)) from None
            raise
        finally:
            deadline.cancel()
        if cut.is_set():
            raise TimeoutError(_too_slow(timeout_s))
        return Response(answer.status, data)
    finally:
        connection.close()


def _too_slow(timeout_s: float) -> str:
    return f"the receiver did not answer within {timeout_s:g} s"


def _hang_up(sock: socket.socket | None, cut: threading.Event) -> None:
    """Called at the answer's deadline: end the blocked read, whichever it is."""
    cut.set()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
