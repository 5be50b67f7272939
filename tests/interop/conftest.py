"""Fixtures: a real keyhold server (the binary) and clients pointed at it."""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
import pytest
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def keyhold_bin():
    env = os.environ.get("KEYHOLD_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "keyhold"
        if p.exists():
            return str(p)
    raise RuntimeError("keyhold binary not built: run cargo build first or set KEYHOLD_BIN")


def aws_cli():
    """The AWS CLI installed next to this Python (the test venv), else the one on PATH."""
    local = pathlib.Path(sys.executable).parent / "aws"
    return str(local) if local.exists() else (shutil.which("aws") or "aws")


def err(excinfo):
    """The AWS error code of the ClientError a `pytest.raises` caught."""
    return excinfo.value.response["Error"]["Code"]


class Server:
    """A `keyhold serve` process on a free loopback port."""

    def __init__(self, args, env=None, ca=None):
        self.proc = subprocess.Popen(
            [keyhold_bin(), "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (https?://\S+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()}")
        self.endpoint = m.group(1)
        self.banner = [line]
        self.ca = ca
        if self.endpoint.startswith("https://") and self.ca is None and "--data-dir" in args:
            self.ca = str(pathlib.Path(args[args.index("--data-dir") + 1]) / "tls" / "ca.pem")
        if "--dev" in args:
            for _ in range(4):
                self.banner.append(self.proc.stdout.readline())
        self.s3_endpoint = None
        if "--dev" in args or "--s3-listen" in args:
            # The banner's lines before it: tls, console, volumes, acme, principal, keys, export.
            for _ in range(10):
                line = self.proc.stdout.readline()
                self.banner.append(line)
                m = re.search(r"s3: listening on (https?://\S+)", line)
                if m:
                    self.s3_endpoint = m.group(1)
                    if "--dev" in args:
                        self.banner.append(self.proc.stdout.readline())
                    break

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, access_key="test", secret="test", service="kms", region=REGION):
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
            verify=self.ca if self.ca else None,
        )

    def s3(self, access_key="test", secret="test", **config):
        """A boto3 S3 client for this server's S3 listener."""
        return boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}, **config),
            verify=self.ca if self.ca else None,
        )

    def cli(self, *args, access_key="test", secret="test", check=True, region=REGION):
        """Runs `aws kms ...` against this server; returns parsed JSON (or the process)."""
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_PAGER": "",
        }
        if self.ca:
            env["AWS_CA_BUNDLE"] = self.ca
        p = subprocess.run(
            [aws_cli(), "kms", *args, "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
        )
        if not check:
            return p
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else {}


@pytest.fixture
def dev_server():
    s = Server(["--dev"])
    yield s
    s.stop()


@pytest.fixture
def dev(tmp_path):
    """`keyhold serve --dev` on a data dir of its own (`.data_dir`), for tests that look into
    it."""
    d = tmp_path / "data"
    s = Server(["--dev", "--data-dir", str(d)])
    s.data_dir = d
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def kms(dev_server):
    return dev_server.client()


def run_keyhold(*args, env=None):
    p = subprocess.run([keyhold_bin(), *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return p


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory(prefix="keyhold-test-") as d:
        yield pathlib.Path(d) / "data"


def wait_until(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def pg_url():
    base = os.environ.get("KEYHOLD_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("SKIP: KEYHOLD_TEST_POSTGRES_URL is not set")
    psycopg = pytest.importorskip("psycopg")
    name = f"kh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


def init_data_dir(data_dir, *extra):
    """`keyhold init --json` on `data_dir`; returns the first principal's credentials."""
    p = run_keyhold("init", "--data-dir", str(data_dir), "--json", *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def two_node_dirs(pg_url, tmp_path):
    """Data dirs of two nodes sharing one PostgreSQL store: `a` initialised, `b` with a's root
    key and CA but its own audit log. Returns (a_dir, b_dir, credentials)."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    creds = init_data_dir(a_dir, "--store", pg_url)
    b_dir.mkdir()
    for f in ("root.key", "root.json"):
        shutil.copy(a_dir / f, b_dir / f)
    shutil.copytree(a_dir / "tls", b_dir / "tls")
    return a_dir, b_dir, creds


def audit_events(data_dir):
    """The audit events written to `data_dir`'s log so far, oldest first."""
    time.sleep(0.5)  # audit writes reach the file within the fsync interval
    out = []
    for seg in sorted((pathlib.Path(data_dir) / "audit").glob("segment-*.jsonl")):
        for line in seg.read_text().splitlines():
            rec = json.loads(line)
            if "event" in rec:
                out.append(rec["event"])
            elif "eventName" in rec:
                out.append(rec)
    return out


@contextlib.contextmanager
def two_accounts(data_dir, *serve_args):
    """`keyhold init` + `serve` (TLS) on `data_dir`, with a principal in a second account:
    the server, with `.admin` and `.other` credentials and `.data_dir`."""
    admin = init_data_dir(data_dir)
    p = run_keyhold("admin", "principal", "create", "--data-dir", str(data_dir),
                    "--account", "444455556666", "--name", "other", "--json")
    assert p.returncode == 0, p.stderr
    other = json.loads(p.stdout)
    s = Server(["--data-dir", str(data_dir), *serve_args])
    s.data_dir = data_dir
    s.admin = (admin["access_key_id"], admin["secret_access_key"])
    s.other = (other["access_key_id"], other["secret_access_key"])
    try:
        yield s
    finally:
        s.stop()
