"""What travels with Ray tasks about the object store: where it is, never its keys."""

from hierpt.storage_env import s3_location, storage_settings


def test_the_s3_location_prefers_the_s3_endpoint_and_the_region_and_carries_no_key(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-forwarded")
    assert s3_location() == (None, None)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://store:9000")
    assert s3_location() == ("eu-north-1", "http://store:9000")
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")
    assert s3_location() == ("us-east-2", "http://s3-only:9000")
    assert "AWS_SECRET_ACCESS_KEY" not in storage_settings()
