"""Packaging: shell completions, the man page, the systemd unit, the Dockerfile, the licence."""

import pathlib
import shutil
import subprocess

import pytest

from conftest import ROOT, keyhold_bin, run_keyhold


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions(shell):
    p = run_keyhold("completions", shell)
    assert p.returncode == 0, p.stderr
    assert "serve" in p.stdout and "rotate-root" in p.stdout
    if shell == "bash" and shutil.which("bash"):
        check = subprocess.run(["bash", "-n"], input=p.stdout, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_man_page():
    p = run_keyhold("man")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(".ie") or ".TH keyhold 1" in p.stdout
    assert ".TH keyhold 1" in p.stdout and "serve" in p.stdout


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("SKIP: systemd-analyze is not installed")
    unit = (ROOT / "packaging" / "keyhold.service").read_text()
    unit = unit.replace("/usr/local/bin/keyhold", keyhold_bin())
    unit = "\n".join(l for l in unit.splitlines() if not l.startswith("Documentation="))
    path = tmp_path / "keyhold.service"
    path.write_text(unit + "\n")
    p = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Unknown" not in p.stderr and "Failed" not in p.stderr, p.stderr


def test_dockerfile_builds_where_docker_runs():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("SKIP: no Docker engine on this machine (the docker client alone cannot build)")
    p = subprocess.run([docker, "build", "-q", "-t", "keyhold-test", str(ROOT)],
                       capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([docker, "run", "--rm", "keyhold-test", "--version"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "keyhold" in p.stdout


def test_licence_matches_the_manifest():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert 'license = "Apache-2.0"' in (ROOT / "Cargo.toml").read_text()
