"""Production Redis: TLS (server and client certificates) and a least-privilege ACL user, end to end against
redis-server processes the tests start (issue 18)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import producers
from igsend.core.store import forget_connections
from igsend.local.embedded_redis import find_redis_server, free_port
from tests.conftest import worker_env

pytestmark = pytest.mark.slow

#: The least igsend needs, as the README gives it (Redis 7 ACL syntax): every command but the dangerous ones
#: (no CONFIG, KEYS, FLUSHALL, DEBUG, SHUTDOWN...), plus INFO (memory checks) and CLIENT (connection setup). All
#: keys and channels: Celery's remote control (Flower, health checks) uses reply queues named by random ids.
ACL_RULES = ["on", ">igsend-pass", "~*", "&*", "+@all", "-@dangerous", "+info", "+client"]


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key_and_cert(directory: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
                  *, ca: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Name, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return key, subject, cert_path, key_path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    ca_key, ca_name, ca_cert, _ = _key_and_cert(directory, "ca", None, ca=True)
    _, _, server_cert, server_key = _key_and_cert(directory, "server", (ca_name, ca_key))
    _, _, client_cert, client_key = _key_and_cert(directory, "client", (ca_name, ca_key))
    _, _, other_ca, _ = _key_and_cert(directory, "other-ca", None, ca=True)
    return Certificates(ca_cert, server_cert, server_key, client_cert, client_key, other_ca)


def _start(tmp: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([find_redis_server(), "--bind", "127.0.0.1", "--dir", str(tmp), "--appendonly", "yes",
                                "--save", "", "--maxmemory-policy", "noeviction", "--logfile", str(tmp / "redis.log"),
                                *extra, *(["--port", str(port)] if "--tls-port" not in extra else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return process, port


def _wait_for(client: redis_lib.Redis, timeout: float = 15.0) -> None:
    """Until the Redis a test just started answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis_lib.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_redis(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port = free_port()
    process, _ = _start(tmp_path_factory.mktemp("tls-redis"), "--port", "0", "--tls-port", str(port),
                        "--tls-cert-file", str(certificates.server_cert), "--tls-key-file",
                        str(certificates.server_key), "--tls-ca-cert-file", str(certificates.ca),
                        "--tls-auth-clients", "optional")
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={certificates.ca}"
    _wait_for(redis_lib.Redis.from_url(url))
    yield url, port
    process.terminate()
    process.wait(10)


@pytest.fixture
def use_url(redis_url: str) -> Iterator[object]:
    def use(url: str) -> None:
        os.environ["IGSEND_REDIS_URL"] = url
        forget_connections()

    yield use
    os.environ["IGSEND_REDIS_URL"] = redis_url
    forget_connections()


def _deliver_through(url: str, sandbox: str, accounts_file: Path, log: Path, recipient: str) -> None:
    from igsend.local.processes import start_worker

    job = producers.send_text(recipient, "over a protected Redis")
    worker = start_worker(env=worker_env(url, sandbox, accounts_file), log_path=log, concurrency=4)
    try:
        assert job.result(timeout=60)["recipient_id"] == recipient
        assert producers.get_job(job.id).status().value == "delivered"
    finally:
        worker.stop()


def test_tls_with_a_verified_server_certificate_end_to_end(tls_redis: tuple[str, int], use_url, sandbox: str,
                                                           accounts_file: Path, tmp_path: Path) -> None:
    url, _ = tls_redis
    use_url(url)
    _deliver_through(url, sandbox, accounts_file, tmp_path / "worker.log", "tls-user")


def test_tls_with_a_client_certificate(tls_redis: tuple[str, int], certificates: Certificates, use_url,
                                       sandbox: str, accounts_file: Path, tmp_path: Path) -> None:
    url = f"{tls_redis[0]}&ssl_certfile={certificates.client_cert}&ssl_keyfile={certificates.client_key}"
    use_url(url)
    _deliver_through(url, sandbox, accounts_file, tmp_path / "worker.log", "tls-client-cert")


def test_a_certificate_that_does_not_verify_stops_the_worker_with_one_line(
        tls_redis: tuple[str, int], certificates: Certificates, sandbox: str, accounts_file: Path) -> None:
    _, port = tls_redis
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={certificates.other_ca}"
    env = {**os.environ, **worker_env(url, sandbox, accounts_file)}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "igsend.cli", "worker", "--processes", "1"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and time.monotonic() - started < 30
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "certificate" in lines[0] and "ssl_ca_certs" in lines[0], lines[0]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, redis_lib.Redis]]:
    process, port = _start(tmp_path_factory.mktemp("acl-redis"))
    admin = redis_lib.Redis(port=port, decode_responses=True)
    _wait_for(admin)
    admin.execute_command("ACL", "SETUSER", "igsend", *ACL_RULES)
    admin.execute_command("ACL", "SETUSER", "admin", "on", ">admin-pass", "~*", "&*", "+@all")  # the test's own
    admin.execute_command("ACL", "SETUSER", "default", "off")  # no anonymous access: igsend logs in as igsend
    admin = redis_lib.Redis(port=port, username="admin", password="admin-pass", decode_responses=True)
    yield f"redis://igsend:igsend-pass@127.0.0.1:{port}/0", admin
    process.terminate()
    process.wait(10)


def test_the_readme_acl_user_is_enough_for_every_part(acl_redis: tuple[str, redis_lib.Redis], use_url,
                                                      sandbox: str, accounts_file: Path, tmp_path: Path) -> None:
    url, client = acl_redis
    client.execute_command("ACL", "LOG", "RESET")
    use_url(url)
    _deliver_through(url, sandbox, accounts_file, tmp_path / "worker.log", "acl-user")
    from igsend.core import dlq
    from igsend.core.store import redis_warnings

    assert dlq.list_entries() == []
    warnings = redis_warnings()  # CONFIG is refused, as on a managed Redis: one warning, not a failure
    assert len(warnings) == 1 and "CONFIG GET refused" in warnings[0] and "noeviction" in warnings[0]
    denied = client.execute_command("ACL", "LOG")
    # Only the CONFIG GET of the risk check may have been refused (it is @dangerous, as on managed Redis).
    assert [entry for entry in denied if "config" not in str(entry).lower()] == [], denied


def test_the_readme_gives_that_acl_line() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "ACL SETUSER igsend " + " ".join(ACL_RULES).replace(">igsend-pass", ">PASSWORD") in readme
