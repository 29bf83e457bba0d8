"""A real S3-compatible server (moto) on 127.0.0.1 for storage tests.

It runs from its own venv, made by scripts/setup-s3-test-server.sh: moto[server] pins a
botocore that the aiobotocore under s3fs in .venv rejects.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

MOTO_SERVER = REPO / ".venv-moto" / "bin" / "moto_server"
needs_s3 = pytest.mark.skipif(
    not MOTO_SERVER.exists(), reason=f"no local S3 server at {MOTO_SERVER}: run scripts/setup-s3-test-server.sh"
)
REGION = "us-west-2"  # s3fs's create_bucket sends a LocationConstraint, which us-east-1 refuses
ACCESS_KEY, SECRET_KEY = "testing", "testing"


@dataclass
class S3Server:
    endpoint: str

    def options(self) -> dict[str, str]:
        """Storage options in LanceDB's names: the one dict facereel takes."""
        return {
            "aws_endpoint": self.endpoint,
            "allow_http": "true",
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION,
        }


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto_server not answering at {url} after {deadline_s:g} s") from None
            time.sleep(0.05)  # poll interval; the deadline above bounds the wait


@contextmanager
def moto_server(log_dir: Path) -> Iterator[S3Server]:
    """Start moto_server on a free port; stopped (and s3fs's cached clients dropped) on exit."""
    from s3fs import S3FileSystem

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = log_dir / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(endpoint + "/", proc, log)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        S3FileSystem.clear_instance_cache()  # no cached client may point at the dead server
