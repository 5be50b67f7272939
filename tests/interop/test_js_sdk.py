"""The AWS SDK for JavaScript v3 (S3, KMS, lib-storage, the presigner) against `serve --dev`."""

import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import Server

JS = pathlib.Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def node_modules():
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        pytest.skip("SKIP: Node.js and npm are not installed")
    if not (JS / "node_modules" / "@aws-sdk" / "client-s3").exists():
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr


def test_the_js_sdk_against_the_gateway(node_modules, tmp_path):
    s = Server(["--dev", "--data-dir", str(tmp_path / "data")])
    try:
        env = {**os.environ, "KMS_ENDPOINT": s.endpoint, "S3_ENDPOINT": s.s3_endpoint}
        p = subprocess.run(["node", "s3.mjs"], cwd=JS, capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
    finally:
        s.stop()
