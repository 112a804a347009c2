"""The SSRF guard of ``executions.webhooks.transport``: which addresses a webhook may reach, the
allow-list, and that the connection goes to the address that was checked (DNS rebinding, names
with several addresses, HTTPS pinned to the address but checked against the name).

Name resolution is faked (rebinding cannot be produced for real here); the connections are
real, to receivers on loopback addresses. An autouse guard records every address a socket
connects to and refuses, before a packet leaves, any that is not loopback: no test, nor a
broken guard under test, ever reaches a public address."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from executions import webhooks
from executions.models import Runtime
from executions.webhooks import transport
from tests.conftest import require_real
from tests.webhooks.conftest import Receiver, ended_execution

pytestmark = pytest.mark.django_db


class FakeDNS:
    """Answers lookups of the names in ``answers``: each a list of answers (lists of
    addresses) given in turn, the last one repeating. Records each lookup of those names;
    any other lookup, and any numeric-only parse, goes to the system resolver."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self.unknown: set[str] = set()  # names that do not resolve (NXDOMAIN)

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.lower() in self.unknown:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if (
            not isinstance(name, str)
            or name.lower() not in self.answers
            or flags & socket.AI_NUMERICHOST
        ):
            return REAL_GETADDRINFO(host, port, family, type, proto, flags)
        self.lookups.append(name)
        turns = self.answers[name.lower()]
        addresses = turns.pop(0) if len(turns) > 1 else turns[0]
        port_number = int(port or 0)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, port_number, 0, 0))
            if ":" in text
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port_number))
            for text in addresses
        ]


REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The (address, port) of every connection attempted; only loopback ones are made."""
    attempted: list[tuple[str, int]] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            attempted.append((address[0], address[1]))
            if not ipaddress.ip_address(address[0]).is_loopback:
                raise ConnectionRefusedError(f"test guard: no connection to {address[0]}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempted


@pytest.fixture(autouse=True)
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Retries queued (execution id, attempt, delay) instead of sent to the task queue."""
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        "executions.webhooks.delivery._enqueue",
        lambda pk, attempt, delay_s=0: calls.append((pk, attempt, delay_s)),
    )
    return calls


@contextlib.contextmanager
def receivers_on_one_port(
    tls: Callable[[], ssl.SSLContext | None] = lambda: None,
) -> Iterator[tuple[Receiver, Receiver]]:
    """Receivers at 127.0.0.1 and 127.0.0.2 on the same port: the address a delivery checks
    and the one a second lookup of the name would give."""
    for _ in range(5):
        checked = Receiver("127.0.0.1", tls=tls())
        try:
            other = Receiver("127.0.0.2", checked.port, tls=tls())
        except OSError:  # that port is taken on 127.0.0.2: try another
            checked.server.server_close()
            continue
        break
    else:
        pytest.fail("No port free on both 127.0.0.1 and 127.0.0.2.")
    with checked, other:
        yield checked, other


# Where the connection goes ----------------------------------------------------------------


def test_http_connects_to_the_checked_address_not_to_a_second_lookup(
    user: User, runtime: Runtime, settings: Any, dns: FakeDNS
) -> None:
    """The name is looked up once. Were it looked up again to connect, an attacker's DNS
    could answer differently the second time (here 127.0.0.2, which the allow-list of
    127.0.0.1/32 does not cover) and the request would reach an address never checked."""
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["127.0.0.1/32"]}
    with receivers_on_one_port() as (checked, other):
        dns.answers["hooks.example"] = [["127.0.0.1"], ["127.0.0.2"]]
        url = f"http://hooks.example:{checked.port}/hook?x=1"
        delivery = webhooks.deliver(ended_execution(user, url).pk, 1)
    assert delivery.succeeded, delivery.error
    assert other.requests == [] and dns.lookups == ["hooks.example"]
    [request] = checked.requests
    assert request["path"] == "/hook?x=1"
    assert request["headers"]["Host"] == f"hooks.example:{checked.port}"


def test_a_name_rebound_to_loopback_after_the_check_is_not_reached(
    user: User, runtime: Runtime, dns: FakeDNS, connections: list[tuple[str, int]]
) -> None:
    """The attack as it happens: the first answer is public, the next one loopback, where a
    receiver listens. The connection goes to the public address (refused here by the test
    guard before leaving the machine), never to the loopback one."""
    with Receiver() as internal:
        dns.answers["hooks.example"] = [["93.184.216.34"], ["127.0.0.1"]]
        url = f"http://hooks.example:{internal.port}/hook"
        delivery = webhooks.deliver(ended_execution(user, url).pk, 1)
    assert internal.requests == []
    assert connections == [("93.184.216.34", internal.port)]
    assert dns.lookups == ["hooks.example"]
    assert not delivery.succeeded and "ConnectionRefusedError" in delivery.error


@pytest.mark.parametrize(
    ("answer", "private"),
    [
        (["93.184.216.34", "10.0.0.5"], "10.0.0.5"),
        (["10.0.0.5", "93.184.216.34"], "10.0.0.5"),
        (["8.8.8.8", "1.1.1.1", "169.254.169.254"], "169.254.169.254"),
        (["2606:4700:4700::1111", "::1"], "::1"),
        (["93.184.216.34", "::ffff:127.0.0.1"], "::ffff:127.0.0.1"),
    ],
)
def test_every_address_of_a_name_is_checked(dns: FakeDNS, answer: list[str], private: str) -> None:
    """A name resolving to a public and a private address is refused: the system may try
    the addresses in any order, and the next lookup may put the private one first."""
    dns.answers["hooks.example"] = [answer]
    with pytest.raises(webhooks.Refused) as refused:
        webhooks.resolve_target("https://hooks.example/hook")
    address = ipaddress.ip_address(private)
    assert f"'hooks.example' resolves to {address}," in str(refused.value)


def test_a_name_with_one_private_address_is_not_delivered_to(
    user: User,
    runtime: Runtime,
    dns: FakeDNS,
    connections: list[tuple[str, int]],
    enqueued: list[Any],
) -> None:
    dns.answers["hooks.example"] = [["93.184.216.34", "10.0.0.5"]]
    delivery = webhooks.deliver(ended_execution(user, "http://hooks.example/hook").pk, 1)
    assert not delivery.succeeded and delivery.status_code is None
    assert delivery.error.startswith("Refused: 'hooks.example' resolves to 10.0.0.5,")
    assert connections == [] and enqueued == []


def test_a_name_with_several_public_addresses_connects_to_the_first(dns: FakeDNS) -> None:
    dns.answers["hooks.example"] = [["93.184.216.34", "8.8.8.8"]]
    target = webhooks.resolve_target("https://hooks.example:8443/a?b=c")
    assert target == webhooks.Target("https", "hooks.example", 8443, "/a?b=c", "93.184.216.34")
    assert dns.lookups == ["hooks.example"]


# HTTPS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, and certificates it signed for ``hooks.example`` and ``other.example``
    (names only: no address in them, so a check against the address would fail)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        require_real("openssl", "not on PATH, and it makes the test certificates")
    folder = tmp_path_factory.mktemp("certificates")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]

    def run(*args: str) -> None:
        subprocess.run(
            [openssl, "req", "-x509", *key, *args], cwd=folder, check=True, capture_output=True
        )

    run("-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=webhook test CA")
    for name in ("hooks.example", "other.example"):
        run(
            *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}"),
            *("-CA", "ca.pem", "-CAkey", "ca.key"),
            *("-addext", f"subjectAltName=DNS:{name}"),
            *("-addext", "basicConstraints=critical,CA:FALSE"),
            *("-addext", "extendedKeyUsage=serverAuth"),
        )
    return {path.stem: path for path in folder.glob("*.pem")}


def server_context(certificates: dict[str, Path], name: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate = certificates[name]
    context.load_cert_chain(certificate, certificate.with_suffix(".key"))
    return context


@pytest.fixture
def trusted_ca(certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA as the system's trust store, which is what the delivery checks with."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))


def test_https_is_pinned_to_the_checked_address_with_the_original_name(
    user: User,
    runtime: Runtime,
    settings: Any,
    dns: FakeDNS,
    certificates: dict[str, Path],
    trusted_ca: None,
) -> None:
    """The TLS connection goes to the checked address, yet asks for the name (SNI), checks
    the certificate against the name (the certificate holds no address, so the delivery
    succeeds only if it does) and sends the name as Host. A second lookup would reach
    127.0.0.2, which serves a valid certificate too."""
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["127.0.0.1/32"]}
    with receivers_on_one_port(lambda: server_context(certificates, "hooks.example")) as (
        checked,
        other,
    ):
        dns.answers["hooks.example"] = [["127.0.0.1"], ["127.0.0.2"]]
        url = f"https://hooks.example:{checked.port}/hook?x=1"
        delivery = webhooks.deliver(ended_execution(user, url).pk, 1)
    assert delivery.succeeded, delivery.error
    assert checked.server_names == ["hooks.example"]
    assert other.server_names == [] and other.requests == []
    assert dns.lookups == ["hooks.example"]
    [request] = checked.requests
    assert request["path"] == "/hook?x=1"
    assert request["headers"]["Host"] == f"hooks.example:{checked.port}"


@pytest.mark.parametrize(
    ("served", "trusted", "error"),
    [
        ("other.example", True, "Hostname mismatch, certificate is not valid for 'hooks.example'"),
        ("hooks.example", False, "unable to get local issuer certificate"),
    ],
)
def test_https_refuses_a_certificate_not_valid_for_the_name(
    user: User,
    runtime: Runtime,
    settings: Any,
    dns: FakeDNS,
    certificates: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    served: str,
    trusted: bool,
    error: str,
) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["127.0.0.1"]}
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))
    dns.answers["hooks.example"] = [["127.0.0.1"]]
    with Receiver(tls=server_context(certificates, served)) as receiver:
        url = f"https://hooks.example:{receiver.port}/hook"
        delivery = webhooks.deliver(ended_execution(user, url).pk, 1)
    assert not delivery.succeeded and delivery.status_code is None
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.error and error in delivery.error
    assert receiver.requests == []


# Address classes --------------------------------------------------------------------------

# (address, a word of the reason it is refused for). Each class is named by the first check
# that matches, so removing one check changes the reason for its rows.
REFUSED = [
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("240.0.0.1", "private"),  # reserved (240.0.0.0/4), and Python counts it private first
    ("::127.0.0.1", "reserved"),  # IPv4-compatible IPv6 (deprecated), in ::/8
    ("64:ff9b::a00:1", "reserved"),  # NAT64 of 10.0.0.1, also in ::/8
    ("0.0.0.0", "unspecified"),  # noqa: S104 (an address to refuse, not one to bind)
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("10.0.0.1", "private"),
    ("10.255.255.254", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.0.1", "private"),
    ("192.168.255.254", "private"),
    ("fc00::1", "private"),
    ("fdff:ffff::1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "metadata"),
    ("fd00:ec2::254", "metadata"),
    # The shared address space 100.64.0.0/10: neither private nor public to Python.
    ("100.64.0.1", "not a public address"),
    ("100.100.100.200", "not a public address"),  # Alibaba Cloud's metadata service
    ("100.127.255.254", "not a public address"),
    # 6to4 addresses route to the IPv4 address inside them.
    ("2002:a00:1::", "private"),  # 10.0.0.1
    ("2002:7f00:1::", "loopback"),  # 127.0.0.1
    ("2002:a9fe:a9fe::", "metadata"),  # 169.254.169.254
    ("fec0::1", "site-local"),  # deprecated, but Python counts it global
]
# Each IPv4 row again as IPv4-mapped IPv6, which the system connects to as the IPv4 address.
REFUSED += [
    (f"::ffff:{text}", reason)
    for text, reason in REFUSED
    if ipaddress.ip_address(text).version == 4
]
ACCEPTED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "2002:808:808::",  # 6to4 of 8.8.8.8
    # Just outside the ranges above.
    "172.15.255.255",
    "172.32.0.1",
    "100.63.255.255",
    "100.128.0.1",
    "169.253.255.255",
    "11.0.0.1",
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_addresses_that_are_not_public_are_refused(text: str, reason: str) -> None:
    address = ipaddress.ip_address(text)
    assert reason in transport._forbidden_reason(address)
    with pytest.raises(webhooks.Refused) as as_address:
        webhooks.check_address(str(address), address)
    assert str(as_address.value).startswith(f"{address} is ")
    with pytest.raises(webhooks.Refused) as as_name:
        webhooks.check_address("hooks.example", address)
    message = str(as_name.value)
    assert message.startswith(f"'hooks.example' resolves to {address},")
    assert reason in message and "EXECUTION_WEBHOOK_ALLOWLIST" in message


@pytest.mark.parametrize("text", ACCEPTED)
def test_public_addresses_are_accepted(dns: FakeDNS, text: str) -> None:
    """So that a guard refusing everything fails too."""
    address = ipaddress.ip_address(text)
    assert transport._forbidden_reason(address) == ""
    webhooks.check_address(str(address), address)
    dns.answers["hooks.example"] = [[text]]
    target = webhooks.resolve_target("https://hooks.example/hook")
    assert ipaddress.ip_address(target.address) == address


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/", "loopback"),
        ("http://localhost:9/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:9/", "loopback"),
        ("http://[::ffff:127.0.0.1]:9/", "loopback"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_private_targets_are_refused(
    user: User, runtime: Runtime, enqueued: list[Any], url: str, reason: str
) -> None:
    """At delivery, a name is refused by what it resolves to, and a literal address (stored
    before the allow-list changed) by itself."""
    execution = ended_execution(user, url, stored=True)
    delivery = webhooks.deliver(execution.pk, 1)
    assert not delivery.succeeded and delivery.status_code is None
    assert delivery.error.startswith("Refused:") and reason in delivery.error
    assert "EXECUTION_WEBHOOK_ALLOWLIST" in delivery.error
    assert delivery.next_retry_at is None and enqueued == []


# The allow-list ---------------------------------------------------------------------------


def test_an_allowlisted_name_does_not_allow_other_names_for_its_address(
    settings: Any, dns: FakeDNS
) -> None:
    """An admin trusts a name, not whatever else resolves to its address: another name an
    attacker points at the same private address is refused, and so is the address itself."""
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": [" Hooks.Internal ", ""]}
    names = [
        "hooks.internal",
        "other.internal",
        "evil-hooks.internal",
        "hooks.internal.evil.example",
        "internal",
    ]
    for name in names:
        dns.answers[name] = [["10.0.0.5"]]
    assert webhooks.resolve_target("http://HOOKS.internal:8080/").address == "10.0.0.5"
    for name in names[1:]:
        with pytest.raises(webhooks.Refused, match="a private address"):
            webhooks.resolve_target(f"http://{name}/")
    with pytest.raises(webhooks.Refused, match="a private address"):
        webhooks.resolve_target("http://10.0.0.5/")


@pytest.mark.parametrize(
    ("allowlist", "text", "allowed"),
    [
        (["10.8.0.0/16"], "10.8.255.254", True),
        (["10.8.0.0/16"], "10.9.0.1", False),
        (["10.8.0.1/16"], "10.8.7.7", True),  # host bits set: read as the network
        (["127.0.0.1"], "127.0.0.1", True),  # an address is a /32
        (["127.0.0.1"], "127.0.0.2", False),
        (["fd00::/8"], "fd12:3456::1", True),
        (["fd00::/8"], "fc00::1", False),
        (["169.254.169.254/32"], "169.254.169.254", True),
        (["10.0.0.0/8"], "169.254.169.254", False),
        (["not a network", "10.0.0.0/33", " ", "8.8.8.8/32"], "10.0.0.1", False),
        (["not a network", "10.0.0.0/33", "", "10.0.0.0/8"], "10.0.0.1", True),  # read on
    ],
)
def test_an_allowlisted_network_allows_its_addresses_only(
    settings: Any, dns: FakeDNS, allowlist: list[str], text: str, allowed: bool
) -> None:
    """By any name and as a literal address."""
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": allowlist}
    dns.answers["hooks.example"] = [[text]]
    host = f"[{text}]" if ":" in text else text
    for url in (f"http://{host}/", "http://hooks.example/"):
        if allowed:
            assert webhooks.resolve_target(url).address == text
        else:
            with pytest.raises(webhooks.Refused):
                webhooks.resolve_target(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example/", "Only http and https callback URLs are allowed, not 'ftp'."),
        ("file:///etc/passwd", "Only http and https callback URLs are allowed, not 'file'."),
        ("http:///hook", "The callback URL has no host."),
        ("https://hooks.example:99999/", "The callback URL's port is invalid: "),
        ("http://nothing.example/", "'nothing.example' has no address."),
        ("http://unknown.invalid/", "Cannot resolve 'unknown.invalid': "),
    ],
)
def test_urls_that_cannot_be_reached_say_why(dns: FakeDNS, url: str, message: str) -> None:
    dns.answers["nothing.example"] = [[]]
    dns.unknown.add("unknown.invalid")
    with pytest.raises(webhooks.Refused) as refused:
        webhooks.resolve_target(url)
    assert str(refused.value).startswith(message)
    assert dns.lookups in ([], ["nothing.example"])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 (an address to refuse)
        ("127.0.0.1", "a loopback address"),
        ("169.254.1.1", "a link-local address"),
        ("10.0.0.1", "a private address"),
        ("224.0.0.1", "a multicast address"),
        ("4000::1", "a reserved address"),
        ("fec0::1", "a site-local address"),
        ("169.254.169.254", "the cloud metadata address"),
        ("100.64.0.1", "not a public address"),
    ],
)
def test_each_refusal_names_its_reason_exactly(text: str, reason: str) -> None:
    address = ipaddress.ip_address(text)
    assert transport._forbidden_reason(address) == reason
    with pytest.raises(webhooks.Refused) as refused:
        webhooks.check_address(text, address)
    assert str(refused.value) == (
        f"{text} is {reason}; webhooks may not reach it unless an admin adds the host or "
        "network to EXECUTION_WEBHOOK_ALLOWLIST."
    )


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://hooks.example/", 80),
        ("https://hooks.example/", 443),
        ("http://hooks.example:8080/", 8080),
    ],
)
def test_the_default_port_follows_the_scheme(dns: FakeDNS, url: str, port: int) -> None:
    dns.answers["hooks.example"] = [["8.8.8.8"]]
    assert webhooks.resolve_target(url).port == port


def test_the_pinned_https_connection_keeps_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting to the checked address must not wait forever for a silent one."""
    seen: list[Any] = []

    def refuse(address: Any, timeout: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append((address, timeout))
        raise OSError("not connecting in this test")

    monkeypatch.setattr(transport.socket, "create_connection", refuse)
    connection = transport._PinnedHTTPSConnection("192.0.2.1", "hooks.example", port=443, timeout=7)
    with pytest.raises(OSError):
        connection.connect()
    assert seen == [(("192.0.2.1", 443), 7)]


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_post_connects_with_its_timeout(monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    """Whatever the scheme, a silent receiver cannot hold the worker past the timeout."""
    seen: list[Any] = []

    def refuse(address: Any, timeout: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append((address, timeout))
        raise OSError("not connecting in this test")

    monkeypatch.setattr(transport.socket, "create_connection", refuse)
    target = transport.Target(scheme, "hooks.example", 8443, "/hook", "192.0.2.1")
    with pytest.raises(OSError):
        transport.post(target, b"{}", {}, 3)
    assert seen == [(("192.0.2.1", 8443), 3)]


def test_allowlist_by_cidr(settings: Any) -> None:
    settings.EXECUTIONS = {**settings.EXECUTIONS, "WEBHOOK_ALLOWLIST": ["10.0.0.0/8"]}
    assert webhooks.resolve_target("http://10.1.2.3:8080/x").address == "10.1.2.3"
    with pytest.raises(webhooks.Refused):
        webhooks.resolve_target("http://192.168.1.1/")


def test_only_http_schemes() -> None:
    with pytest.raises(webhooks.Refused, match="Only http and https"):
        webhooks.resolve_target("file:///etc/passwd")


class DrippingReceiver:
    """Reads a request, then answers ``head`` at once and ``drip`` a byte every ``every_s``:
    each read of the client's is quick, the answer as a whole is not."""

    def __init__(self, head: bytes, drip: bytes, every_s: float = 0.05) -> None:
        self.head, self.drip, self.every_s = head, drip, every_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        peer, _ = self.listener.accept()
        with peer:
            peer.recv(65536)
            try:
                peer.sendall(self.head)
                for byte in self.drip:
                    time.sleep(self.every_s)
                    peer.sendall(bytes([byte]))
            except OSError:
                pass  # the client hung up: what the test wants

    def target(self) -> transport.Target:
        return transport.Target("http", "127.0.0.1", self.port, "/hook", "127.0.0.1")


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n", b"x" * 200),
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"y" * 200 + b"\r\n\r\n"),
    ],
    ids=["body", "headers"],
)
def test_an_answer_dripped_byte_by_byte_is_cut_at_the_timeout(head: bytes, drip: bytes) -> None:
    """Every read returns within the timeout, but the answer as a whole would take 10 s."""
    receiver = DrippingReceiver(head, drip)
    with pytest.raises(TimeoutError, match=r"did not answer within 0\.5 s"):
        transport.post(receiver.target(), b"{}", {}, 0.5)
    receiver.thread.join(timeout=15)
    assert not receiver.thread.is_alive(), "the receiver was left sending"


def test_a_prompt_answer_is_not_cut() -> None:
    receiver = DrippingReceiver(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", b"")
    assert transport.post(receiver.target(), b"{}", {}, 5).status_code == 204
