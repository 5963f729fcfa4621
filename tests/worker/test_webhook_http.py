"""One delivery attempt over https (worker.webhook_http.post): connected to the checked
address, yet the certificate is verified for the URL's host, which SNI and ``Host`` name."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from worker.webhook_http import post

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """An https receiver on loopback with a certificate for ``hooks.test`` that the
    sender's default context trusts; what it got (``Host`` headers, SNI names)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.test",
                    "-addext", "subjectAltName=DNS:hooks.test"], check=True,
                   capture_output=True)
    seen: dict = {"hosts": [], "sni": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen["hosts"].append(self.headers["Host"])
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    trusting = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda: trusting(cafile=str(cert)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen["port"] = server.server_address[1]
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_https_to_the_checked_address_is_verified_for_the_urls_host(tls_receiver: dict):
    """Connected to 127.0.0.1, the handshake names ``hooks.test`` (SNI), the certificate
    is checked for it, and ``Host`` names it with its port."""
    port = tls_receiver["port"]
    answer = post(f"https://hooks.test:{port}/hook", b"{}", {}, timeout=10,
                  allow_private=True, resolver=loopback)
    assert (answer.status_code, answer.error) == (201, None)
    assert tls_receiver["hosts"] == [f"hooks.test:{port}"]
    assert "hooks.test" in tls_receiver["sni"]


def test_https_to_a_host_the_certificate_does_not_name_is_refused(tls_receiver: dict):
    """The same receiver, reached through another name, fails the certificate check: the
    request is never sent."""
    answer = post(f"https://other.test:{tls_receiver['port']}/hook", b"{}", {}, timeout=10,
                  allow_private=True, resolver=loopback)
    assert answer.status_code is None and "CERTIFICATE_VERIFY_FAILED" in answer.error
    assert tls_receiver["hosts"] == []
