"""A real S3-compatible server for tests: moto's server (PyPI ``moto[server]``) on a random port.

Import the fixtures where S3 is used: ``from tests.s3server import s3_server, s3_url  # noqa: F401``.
"""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a moto S3 server started for this test session (stopped at its end)."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(s3_server, monkeypatch):
    """A fresh bucket on the test S3 server, as an ``s3://`` storage URL; the environment points the
    platform's storage at that server."""
    import boto3
    monkeypatch.setenv("ARENA_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "arena-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "arena-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"arena-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="arena-test", aws_secret_access_key="arena-test",
                 region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}/data"
