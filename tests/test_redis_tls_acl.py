"""Production Redis: TLS (server and client certificates) and a least-privilege ACL user, end to end against
redis-server processes the tests start (issue 18)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib
import requests
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import producers
from igsend.core.store import forget_connections
from igsend.local.embedded_redis import find_redis_server, free_port
from tests.conftest import wait_until, worker_env

pytestmark = pytest.mark.slow

#: The least igsend needs, as docs/redis.md gives it (Redis 7 ACL syntax); each pattern is proved needed by the test
#: below (drop one and it fails). Keys: igsend's own (``igsend:*``) and its queue lists (``igsend``, and kombu's
#: priority lists: ``igsend``, a two-byte separator, the step); kombu's unacked bookkeeping and binding tables
#: (``_kombu.binding.*``, ``_kombu.binding_deadlines``, ``_kombu.binding_permanent.*``); the remote-control queues
#: of workers (``HOSTNAME.celery.pidbox``) and the reply queues of inspect/ping (``ID.reply.celery.pidbox``),
#: which kombu sizes and deletes per priority list; Flower's event queue (``celeryev.ID``); Celery's results for
#: raw clients (``celery-task-meta-ID``). Channels: Celery's events and broadcasts (``/DB.`` prefixed, DB 0 here;
#: Flower PSUBSCRIBEs ``/0.celeryev/*``, which an ACL allows only literally) and the result notifications.
#: Commands: all but the dangerous ones (no CONFIG, KEYS, FLUSHALL, DEBUG, SHUTDOWN, CLIENT KILL/LIST...),
#: plus INFO (memory checks).
ACL_RULES = ["on", ">igsend-pass",
             "~igsend", "~igsend:*", "~igsend??[0-9]", "~unacked", "~unacked_index", "~unacked_mutex",
             "~_kombu.binding*", "~*.celery.pidbox*", "~celeryev.*", "~celery-task-meta-*",
             "resetchannels", "&/0.celeryev/*", "&/0.celery.pidbox", "&celery-task-meta-*",
             "+@all", "-@dangerous", "+info"]


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


#: Every flag of an X.509 keyUsage extension, for building one from the few a certificate sets.
_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
               "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


def _key_and_cert(directory: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
                  purpose: x509.ObjectIdentifier | None = None
                  ) -> tuple[ec.EllipticCurvePrivateKey, x509.Name, Path, Path]:
    """A key and a certificate with the extensions a real CA puts in, which Python 3.13's VERIFY_X509_STRICT
    (set by ``ssl.create_default_context()``) requires: a self-signed CA if ``purpose`` is None, else a leaf for
    127.0.0.1/localhost whose extended key usage is ``purpose`` (serverAuth or clientAuth), signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    ca = purpose is None
    usages = ("key_cert_sign", "crl_sign") if ca else ("digital_signature", "key_encipherment")
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(**{usage: usage in usages for usage in _KEY_USAGES}), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if purpose is not None:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = (builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False))
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
    ca_key, ca_name, ca_cert, _ = _key_and_cert(directory, "ca")
    ca = (ca_name, ca_key)
    _, _, server_cert, server_key = _key_and_cert(directory, "server", ca, ExtendedKeyUsageOID.SERVER_AUTH)
    _, _, client_cert, client_key = _key_and_cert(directory, "client", ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    _, _, other_ca, _ = _key_and_cert(directory, "other-ca")
    return Certificates(ca_cert, server_cert, server_key, client_cert, client_key, other_ca)


@contextmanager
def _redis_server(tmp: Path, *extra: str) -> Iterator[int]:
    """A redis-server on 127.0.0.1, stopped on leaving the block however it is left: a fixture whose setup fails
    after the start (the server never answers, a TLS handshake is refused) leaves no server behind. Yields its
    plain port (unused when ``extra`` has a ``--tls-port``: the caller chose that one)."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([find_redis_server(), "--bind", "127.0.0.1", "--dir", str(tmp), "--appendonly", "yes",
                                "--save", "", "--maxmemory-policy", "noeviction", "--logfile", str(tmp / "redis.log"),
                                *extra, *(["--port", str(port)] if "--tls-port" not in extra else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    with _redis_server(tmp_path_factory.mktemp("tls-redis"), "--port", "0", "--tls-port", str(port),
                       "--tls-cert-file", str(certificates.server_cert), "--tls-key-file",
                       str(certificates.server_key), "--tls-ca-cert-file", str(certificates.ca),
                       "--tls-auth-clients", "optional"):
        url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={certificates.ca}"
        _wait_for(redis_lib.Redis.from_url(url))
        yield url, port


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
    # a certificate error is final (never retried): the worker exits rather than hanging (timeout: a hang guard)
    run = subprocess.run([sys.executable, "-m", "igsend.cli", "worker", "--processes", "1"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "certificate" in lines[0] and "ssl_ca_certs" in lines[0], lines[0]


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, redis_lib.Redis]]:
    with _redis_server(tmp_path_factory.mktemp("acl-redis")) as port:
        admin = redis_lib.Redis(port=port, decode_responses=True)
        _wait_for(admin)
        admin.execute_command("ACL", "SETUSER", "igsend", *ACL_RULES)
        admin.execute_command("ACL", "SETUSER", "admin", "on", ">admin-pass", "~*", "&*", "+@all")  # the test's own
        admin.execute_command("ACL", "SETUSER", "default", "off")  # no anonymous access: igsend logs in as igsend
        admin = redis_lib.Redis(port=port, username="admin", password="admin-pass", decode_responses=True)
        yield f"redis://igsend:igsend-pass@127.0.0.1:{port}/0", admin


FLOWER_AUTH = ("ops", "flower-acl-password")


def _fault(sandbox: str, recipient: str, *faults: dict) -> None:
    requests.post(f"{sandbox}/_sandbox/faults", json={"recipient": recipient, "faults": list(faults)},
                  timeout=5).raise_for_status()


def _cli(*args: str) -> Result:
    from igsend.cli.main import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _inspect(url: str) -> dict:
    """``celery inspect`` as Flower and operators run it: a broadcast, answers on a reply queue."""
    from celery import Celery

    from igsend.core.celery_app import celery_config
    from igsend.core.settings import Settings

    app = Celery("igsend-inspect")
    app.conf.update(celery_config(Settings(redis_url=url)))
    try:
        return app.control.inspect(timeout=2).active_queues() or {}
    finally:
        app.close()


def _raw_celery_result(url: str) -> dict:
    """A raw Celery client that wants the result: Celery's defaults, the result backend on the same Redis."""
    from celery import Celery

    client = Celery("other-app", broker=url, backend=url)
    try:
        result = client.send_task("igsend.send_message", args=[{"kind": "text", "recipient": "acl-raw",
                                                                 "text": "from another app"}], queue="igsend")
        return result.get(timeout=60)
    finally:
        client.close()


def _every_part(url: str, admin: redis_lib.Redis, sandbox: str, flower: str) -> None:
    from igsend.core import dlq
    from igsend.core.store import get_redis
    from producers.api import create_app
    from workers.metrics import RedisStateCollector
    from workers.sweeper import Sweeper

    # Producers: one delivered, one retried (igsend:delayed, then the scheduler's due list), one dead (the DLQ).
    _fault(sandbox, "acl-flaky", {"code": 2, "status": 500, "is_transient": True})
    _fault(sandbox, "acl-dead", {"code": 100, "subcode": 2018001})
    sent = producers.send_text("acl-user", "over a protected Redis")
    flaky = producers.send_text("acl-flaky", "again, over a protected Redis")
    dead = producers.send_text("acl-dead", "refused once")
    assert sent.result(timeout=60)["recipient_id"] == "acl-user"
    assert flaky.result(timeout=60)["recipient_id"] == "acl-flaky"
    assert [a["outcome"] for a in flaky.info()["attempt_log"]] == ["transient", "delivered"]
    with pytest.raises(producers.MessageDead):
        dead.result(timeout=60)
    assert [entry["id"] for entry in dlq.list_entries()] == [dead.id]

    # The CLI: status (and of an id with no record: the broker scan of the queue lists and unacked), accounts,
    # the DLQ, a replay (the fault was used up, so it is delivered).
    assert json.loads(_cli("status", sent.id).stdout)["status"] == "delivered"
    assert _cli("status", "no-such-job").exit_code == 1
    listed = _cli("accounts", "list", "--json")
    assert listed.exit_code == 0 and {row["account"] for row in json.loads(listed.stdout)} >= {"default", "shop"}
    assert dead.id in _cli("dlq", "list").stdout
    assert _cli("dlq", "replay", dead.id).exit_code == 0
    assert dead.result(timeout=60)["recipient_id"] == "acl-dead"
    assert dlq.list_entries() == []

    # The HTTP API, with an idempotency key; its health check reads the workers' heartbeats.
    api = create_app(api_keys=["acl-key"]).test_client()
    auth = {"Authorization": "Bearer acl-key"}
    posted = api.post("/v1/messages", json={"kind": "text", "recipient": "acl-api", "text": "over HTTP",
                                             "idempotency_key": "acl-1"}, headers=auth)
    assert posted.status_code == 202, posted.get_json()
    job_id = posted.get_json()["id"]
    assert producers.get_job(job_id).result(timeout=60)["recipient_id"] == "acl-api"
    assert api.get(f"/v1/messages/{job_id}", headers=auth).get_json()["status"] == "delivered"
    assert api.get("/v1/dead-letters", headers=auth).status_code == 200
    health = api.get("/healthz").get_json()
    assert health["ok"] and health["workers"] >= 1, health

    # A raw Celery client and its result (Celery's result backend); Celery's remote control (inspect).
    assert _raw_celery_result(url)["recipient_id"] == "acl-raw"
    assert any(queue["name"] == "igsend" for queues in _inspect(url).values() for queue in queues)

    # Flower: the workers (remote control), the queue lengths (the queue lists), the task (events).
    assert requests.get(f"{flower}/api/workers", params={"refresh": 1}, auth=FLOWER_AUTH, timeout=30).json()
    lengths = requests.get(f"{flower}/api/queues/length", auth=FLOWER_AUTH, timeout=30).json()
    assert [queue["name"] for queue in lengths["active_queues"]] == ["igsend"], lengths
    # (a task sent well after Flower started: its event receiver binds a moment after its health check answers)
    # (the API's message went out in its account's chunk, igsend.send_chunk: igsend.core.chunks)
    def chunk_task() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", params={"taskname": "igsend.send_chunk"}, auth=FLOWER_AUTH,
                             timeout=10)
        return next((task for task in tasks.json().values() if task.get("state") == "SUCCESS"), None) \
            if tasks.ok else None

    task = wait_until(chunk_task, timeout=60)
    assert task["state"] == "SUCCESS" and task["args"].startswith("['default', 'text', ")

    # The worker's sweeper has read the queue lists' oldest messages (it alone uses LINDEX; stats reset at start),
    # and so does one pass here; the metrics exporter reads the queue lists and INFO memory.
    wait_until(lambda: "cmdstat_lindex" in admin.info("commandstats"), timeout=15)
    Sweeper(get_redis()).sweep()
    assert {metric.name for metric in RedisStateCollector().collect()} >= {"igsend_queue_depth", "igsend_dlq_size"}


def test_the_readme_acl_user_is_enough_for_every_part(acl_redis: tuple[str, redis_lib.Redis], use_url,
                                                      sandbox: str, accounts_file: Path, tmp_path: Path) -> None:
    """Every part of igsend against a Redis where it may touch only the keys of docs/redis.md: a worker (with its
    scheduler, sweeper and remote control), producers, the CLI, the HTTP API, Flower, the metrics exporter and a
    raw Celery client. Then the ACL log must hold no denial but the CONFIG GET of the risk check."""
    from igsend.core.store import redis_warnings
    from igsend.local.processes import start_command, start_worker

    url, admin = acl_redis
    admin.execute_command("ACL", "LOG", "RESET")
    admin.config_resetstat()
    use_url(url)
    # start_worker waits for the worker's answer to a ping: a remote-control broadcast and a reply queue
    worker = start_worker(env=worker_env(url, sandbox, accounts_file), log_path=tmp_path / "worker.log",
                          concurrency=4)
    services = [worker]
    try:
        port = free_port()
        services.append(start_command("flower", ["flower", "--port", str(port)],
                                      env={"IGSEND_REDIS_URL": url, "IGSEND_FLOWER_AUTH": ":".join(FLOWER_AUTH)},
                                      ready_url=f"http://127.0.0.1:{port}/healthcheck",
                                      log_path=tmp_path / "flower.log", wait=60))
        _every_part(url, admin, sandbox, f"http://127.0.0.1:{port}")
    finally:
        for service in reversed(services):
            service.stop()  # a warm shutdown: the worker deletes its remote-control queue

    warnings = redis_warnings()  # CONFIG is refused, as on a managed Redis: one warning, not a failure
    assert len(warnings) == 1 and "CONFIG GET refused" in warnings[0] and "noeviction" in warnings[0]
    # Replica acknowledgements (IGSEND_REDIS_REPLICA_ACKS) need WAIT; this Redis has no replica to wait for.
    assert admin.execute_command("ACL", "DRYRUN", "igsend", "WAIT", "1", "100") == "OK"
    denied = admin.execute_command("ACL", "LOG")
    # Only the CONFIG GET of the risk check may have been refused (it is @dangerous, as on managed Redis).
    assert [entry for entry in denied if "config" not in str(entry).lower()] == [], denied


def test_the_readme_gives_that_acl_line() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "redis.md").read_text()
    assert "ACL SETUSER igsend " + " ".join(ACL_RULES).replace(">igsend-pass", ">PASSWORD") in readme
