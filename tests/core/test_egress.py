"""Where webhooks may go: public addresses only, checked after resolution, then pinned."""

import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import trustme

from core import egress
from core.egress import BlockedDestination, checked_addresses, guarded_session, url_refusal

REFUSED = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "::1",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "fd00::1",
    "169.254.169.254",  # link-local: AWS, GCP, Azure metadata
    "fe80::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # shared address space (Alibaba metadata, CG-NAT)
    "0.0.0.0",  # unspecified
    "::",
    "224.0.0.1",  # multicast
    "ff02::1",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
]


@pytest.fixture
def dns(monkeypatch):
    """A fake resolver: host -> addresses; counts lookups."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []

    def resolve(host, port):
        lookups.append(host)
        try:
            return [ipaddress.ip_address(a) for a in table[host]]
        except KeyError:
            return [ipaddress.ip_address(host)]  # a literal address

    monkeypatch.setattr(egress, "resolve", resolve)
    return table, lookups


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address, settings):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = []
    assert egress.address_refusal(ipaddress.ip_address(address))
    with pytest.raises(BlockedDestination, match="ABACUS_WEBHOOK_ALLOWED_HOSTS"):
        checked_addresses(address, 80)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert egress.address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8499/hook",
        "http://localhost:6379/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::1]:8000/",
        "http://0x7f000001/",
    ],
)
def test_urls_inside_the_network_are_refused_when_saved(url, settings):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = []
    assert url_refusal(url)


def test_a_name_that_resolves_to_any_internal_address_is_refused(dns, settings):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = []
    table, _ = dns
    table["hooks.example.com"] = ["93.184.215.14", "10.0.0.5"]
    with pytest.raises(BlockedDestination, match="hooks.example.com resolves to 10.0.0.5"):
        checked_addresses("hooks.example.com", 443)
    assert "10.0.0.5" in url_refusal("https://hooks.example.com/x")


def test_the_allow_list_takes_cidrs_addresses_and_host_names(dns, settings):
    table, _ = dns
    table["hooks.corp"] = ["10.20.0.7"]
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["10.20.0.0/16"]
    assert checked_addresses("hooks.corp", 80) == [ipaddress.ip_address("10.20.0.7")]
    with pytest.raises(BlockedDestination):
        checked_addresses("10.21.0.1", 80)  # outside the CIDR
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    assert checked_addresses("127.0.0.1", 80)
    with pytest.raises(BlockedDestination):
        checked_addresses("hooks.corp", 80)
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["hooks.corp"]
    assert url_refusal("http://hooks.corp/abacus") is None


def test_unresolvable_names_are_accepted_when_saved_and_checked_when_sent():
    assert url_refusal("https://no-such-host.invalid/hook") is None


def test_url_schemes_and_credentials_are_refused():
    assert url_refusal("ftp://example.com/x")
    assert url_refusal("https://user:pw@example.com/x")


# --- the transport ---------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).hosts.append(self.headers["Host"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    servers = []

    def start(context: ssl.SSLContext | None = None) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    _Recorder.hosts = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    dns, settings, local_server
):
    """DNS rebinding: the name is resolved once, by the check, and the socket connects to that
    address. 'rebind.test' exists only in the fake resolver, so a second, real lookup would
    fail."""
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    table, lookups = dns
    table["rebind.test"] = ["127.0.0.1"]
    port = local_server()
    with guarded_session() as session:
        response = session.post(f"http://rebind.test:{port}/hook", data=b"{}", timeout=5)
    assert response.status_code == 204
    assert lookups == ["rebind.test"]
    assert _Recorder.hosts == [f"rebind.test:{port}"]  # the Host header keeps the name


def test_a_refused_name_is_never_connected_to(dns, settings, local_server):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = []
    table, _ = dns
    table["evil.test"] = ["127.0.0.1"]
    port = local_server()
    with guarded_session() as session, pytest.raises(BlockedDestination):
        session.post(f"http://evil.test:{port}/hook", data=b"{}", timeout=5)
    assert _Recorder.hosts == []


def test_https_verifies_the_certificate_for_the_host_name_not_the_address(
    dns, settings, local_server, tmp_path
):
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    table, _ = dns
    table["hooks.test"] = ["127.0.0.1"]
    table["other.test"] = ["127.0.0.1"]
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(context)
    port = local_server(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with guarded_session() as session:
        ok = session.post(f"https://hooks.test:{port}/h", data=b"{}", verify=str(ca_file))
        assert ok.status_code == 204
        with pytest.raises(requests.exceptions.SSLError):  # the certificate is for hooks.test
            session.post(f"https://other.test:{port}/h", data=b"{}", verify=str(ca_file))
        with pytest.raises(requests.exceptions.SSLError):  # an untrusted CA
            session.post(f"https://hooks.test:{port}/h", data=b"{}")


def test_environment_proxies_are_ignored(monkeypatch, dns, settings, local_server):
    """A proxy would resolve the name itself, after the check."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    settings.ABACUS_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    port = local_server()
    with guarded_session() as session:
        assert session.post(f"http://127.0.0.1:{port}/h", data=b"{}", timeout=5).ok
