"""deploy/nginx.conf: the front door of compose.yml.

The static checks always run. Where an `nginx` binary is installed, the file is also
checked by nginx itself and run in front of two stand-in backends on 127.0.0.1 (the
compose upstream `api:8080 resolve` becomes the two backends' addresses: Docker's DNS
does not exist here, and `resolve` needs nginx >= 1.27.3, newer than distributions ship).
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from storage.embedded.processes import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx.conf"
UPSTREAM_SERVER = re.compile(r"^(?P<indent>\s*)server\s+(?P<host>[\w.-]+):(?P<port>\d+)(?P<params>[^;]*);", re.M)


@pytest.fixture(scope="module")
def conf() -> str:
    return NGINX_CONF.read_text()


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((REPO / "compose.yml").read_text())["services"]


def upstream_block(conf: str) -> str:
    match = re.search(r"upstream\s+pulse_api\s*\{(?P<body>[^}]*)\}", conf)
    assert match, "no `upstream pulse_api` block"
    return match["body"]


# ---- static checks ----

def test_upstream_is_the_api_service_on_its_port(conf, services):
    servers = list(UPSTREAM_SERVER.finditer(upstream_block(conf)))
    assert [s["host"] for s in servers] == ["api"]
    command = services["api"]["command"]
    assert servers[0]["port"] == command[command.index("--port") + 1]
    assert services["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_upstream_follows_scaling_through_docker_dns(conf):
    block = upstream_block(conf)
    # `resolve` re-resolves `api` (one A record per replica); it needs a shared zone
    # and Docker's embedded resolver.
    assert re.search(r"server\s+api:\d+[^;]*\bresolve\b", block)
    assert re.search(r"^\s*zone\s+\w+\s+\d+[km];", block, re.M)
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", conf, re.M)


def test_nginx_image_supports_resolve(services):
    image = services["nginx"]["image"]
    repository, _, tag = image.partition(":")
    assert repository == "nginx"
    version = tuple(int(part) for part in re.match(r"(\d+)\.(\d+)\.(\d+)", tag).groups())
    assert version >= (1, 27, 3), f"{image}: `resolve` in an upstream needs nginx >= 1.27.3"


def test_polling_clients_are_sticky(conf):
    block = upstream_block(conf)
    assert re.search(r"^\s*(hash\s+\$remote_addr\s+consistent|ip_hash);", block, re.M)


def test_websocket_upgrade_is_forwarded(conf):
    assert re.search(r"location\s+/socket\.io/\s*\{", conf)
    assert re.search(r"proxy_http_version\s+1\.1;", conf)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", conf)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", conf)
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{", conf)


def test_nginx_healthcheck_path_is_served_by_nginx(conf, services):
    check = " ".join(services["nginx"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1(/[\w-]+)", check)[1]
    assert re.search(rf"location\s+=\s+{re.escape(path)}\s*\{{[^}}]*return\s+200", conf)


# ---- nginx itself, where installed ----

def localised(conf: str, backend_ports: list[int], listen_port: int, work_dir: Path, nginx: str) -> str:
    """The config with the compose-only parts replaced by local ones."""
    match = UPSTREAM_SERVER.search(conf)
    local_servers = "\n".join(
        f"{match['indent']}server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;" for port in backend_ports
    )
    conf = conf[:match.start()] + local_servers + conf[match.end():]
    conf, listens = re.subn(r"\blisten\s+80;", f"listen 127.0.0.1:{listen_port};", conf)
    assert listens == 1
    # Temporary files under work_dir, not the distribution's /var/lib/nginx.
    built_with = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    temp_paths = "".join(
        f"    {kind}_temp_path {work_dir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if f"--http-{kind.replace('_', '-')}-temp-path" in built_with
    )
    return conf.replace("http {\n", "http {\n" + temp_paths, 1)


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (e.g. `apt-get install nginx-light`)")
    return nginx


@pytest.fixture(scope="module")
def work_dir():
    # Not pytest's tmp_path: nginx workers run as `nobody` when started by root and
    # must be able to reach their temporary directories.
    path = Path(tempfile.mkdtemp(prefix="pulse-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_nginx_test(nginx: str, conf_file: Path, work_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [nginx, "-t", "-c", str(conf_file), "-e", str(work_dir / "error.log"),
         "-g", f"pid {work_dir / 'nginx.pid'};"],
        capture_output=True, text=True, timeout=30,
    )


def test_nginx_accepts_the_config(nginx_binary, conf, work_dir):
    conf_file = work_dir / "check.conf"
    conf_file.write_text(localised(conf, [free_port()], free_port(), work_dir, nginx_binary))
    done = run_nginx_test(nginx_binary, conf_file, work_dir)
    assert done.returncode == 0, done.stderr


def test_nginx_rejects_a_broken_config(nginx_binary, conf, work_dir):
    # The check above would notice a mistake: drop the closing brace of `http`.
    conf_file = work_dir / "broken.conf"
    broken = localised(conf, [free_port()], free_port(), work_dir, nginx_binary).rstrip().removesuffix("}")
    conf_file.write_text(broken)
    assert run_nginx_test(nginx_binary, conf_file, work_dir).returncode != 0


class StandInBackend(BaseHTTPRequestHandler):
    """Answers with its name and the request headers it got; accepts WebSocket
    upgrades and then echoes bytes, as a Socket.IO server's transport would carry them."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and
    # delayed ACKs hold each response back for tens of milliseconds.
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            # Like a real WebSocket server: no "Connection: upgrade", no handshake.
            if "upgrade" not in self.headers.get("Connection", "").lower():
                self.send_error(400, "Connection: upgrade missing")
                return
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while chunk := self.connection.recv(4096):
                self.connection.sendall(chunk)
            self.close_connection = True
            return
        body = json.dumps({"backend": self.server.name, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def proxy(nginx_binary, conf, work_dir):
    backends = []
    for name in ("api-1", "api-2"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), StandInBackend)
        server.daemon_threads = True
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        backends.append(server)
    port = free_port()
    conf_file = work_dir / "run.conf"
    conf_file.write_text(localised(conf, [b.server_address[1] for b in backends], port, work_dir, nginx_binary))
    output = (work_dir / "nginx.out").open("wb")
    process = subprocess.Popen(
        [nginx_binary, "-c", str(conf_file), "-e", str(work_dir / "error.log"),
         "-g", f"daemon off; pid {work_dir / 'nginx.pid'};"],
        stdout=output, stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_for_port(port, timeout=15)
        except RuntimeError:
            pytest.fail(f"nginx did not start: {(work_dir / 'nginx.out').read_text()}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)
        output.close()
        for server in backends:
            server.shutdown()
            server.server_close()


def get(port: int, path: str, client_address: str = "127.0.0.1", headers: dict | None = None):
    connection = HTTPConnection("127.0.0.1", port, timeout=10, source_address=(client_address, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_polling_requests_from_one_client_reach_one_instance(proxy):
    seen: dict[str, set[str]] = {}
    # Distinct client addresses on the loopback network (all of 127.0.0.0/8 is local).
    for host in range(2, 66):
        address = f"127.0.0.{host}"
        for _ in range(2):
            status, body = get(proxy, "/socket.io/?EIO=4&transport=polling", address)
            assert status == 200
            seen.setdefault(address, set()).add(json.loads(body)["backend"])
    assert all(len(backends) == 1 for backends in seen.values()), seen
    # ...and different clients are spread over the instances.
    assert set().union(*seen.values()) == {"api-1", "api-2"}


def test_proxy_passes_client_identity_and_keeps_upstream_connections(proxy):
    status, body = get(proxy, "/api/v1/users/me", "127.0.0.7")
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert headers["x-real-ip"] == "127.0.0.7"
    assert headers["x-forwarded-for"] == "127.0.0.7"
    assert headers["x-request-id"]
    # No "Connection: upgrade" on plain requests (that would defeat upstream keepalive).
    assert "upgrade" not in headers.get("connection", "").lower()


def test_websocket_upgrade_is_tunnelled(proxy):
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as sock:
        sock.sendall(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            b"Host: pulse\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(b"2probe")
        echoed = b""
        while len(echoed) < len(b"2probe"):
            chunk = sock.recv(4096)
            assert chunk
            echoed += chunk
        assert echoed == b"2probe"


def test_metrics_are_not_exposed_through_the_balancer(proxy):
    status, _ = get(proxy, "/metrics")
    assert status == 403


def test_nginx_health_is_answered_by_nginx(proxy):
    assert get(proxy, "/nginx-health") == (200, b"ok\n")
