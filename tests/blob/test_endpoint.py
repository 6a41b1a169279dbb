"""The SSRF guard of tier endpoints (blob/_endpoint.py): each class of address refused or
allowed, with and without ``allow_private``; literal IPs (no DNS) except ``localhost``; a
resolver double stands in for names that would resolve elsewhere (DNS rebinding)."""

from __future__ import annotations

import pytest

from tierstore.blob import EndpointRefused, check_endpoint
from tierstore.errors import InvalidArgument

ALWAYS_REFUSED = [
    # cloud metadata addresses, also inside IPv6 and in other IPv4 spellings
    ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("http://169.254.170.2", "cloud metadata"),
    ("http://[fd00:ec2::254]", "cloud metadata"),
    ("http://100.100.100.200", "cloud metadata"),
    ("http://168.63.129.16", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]", "carrying 169.254.169.254, a cloud metadata"),
    ("http://[64:ff9b::a9fe:a9fe]", "carrying 169.254.169.254, a cloud metadata"),
    ("http://2852039166", "cloud metadata"),  # 169.254.169.254 as one number (inet_aton)
    ("http://0xa9.0xfe.0xa9.0xfe", "cloud metadata"),
    ("http://metadata.google.internal/computeMetadata/v1", "cloud metadata service"),
    ("http://metadata", "cloud metadata service"),
    ("http://METADATA.google.internal.", "cloud metadata service"),
    # link-local
    ("http://169.254.1.1:8333", "link-local"),
    ("http://[fe80::1]", "link-local"),
    ("http://[fe80::1%25eth0]:9000", "link-local"),
    ("http://[::ffff:169.254.10.10]", "link-local"),
    # multicast, unspecified, broadcast, reserved
    ("http://224.0.0.1", "multicast"),
    ("http://[ff02::1]", "multicast"),
    ("http://0.0.0.0:9000", "unspecified"),
    ("http://[::]", "unspecified"),
    ("http://255.255.255.255", "broadcast"),
    ("http://240.0.0.1", "reserved"),
]

PRIVATE = [
    ("http://127.0.0.1:8333", "loopback"),
    ("http://127.8.9.10", "loopback"),
    ("http://[::1]:8333", "loopback"),
    ("http://localhost:8333", "loopback"),  # resolves (no network needed)
    ("http://10.1.2.3", "private"),
    ("https://172.16.0.9", "private"),
    ("http://192.168.1.20:9000", "private"),
    ("http://[fd12:3456::1]", "private"),
    ("http://[::ffff:10.0.0.1]", "carrying 10.0.0.1, a private"),
    ("http://100.64.0.1", "CGNAT"),
    ("http://100.127.255.254", "CGNAT"),
]

PUBLIC = ["https://8.8.8.8", "http://93.184.216.34:8080/base", "https://[2001:4860:4860::8888]", "http://1.1.1.1:443"]


@pytest.mark.parametrize(("url", "reason"), ALWAYS_REFUSED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_always_refused(url: str, reason: str, allow_private: bool) -> None:
    with pytest.raises(EndpointRefused, match=reason):
        check_endpoint(url, allow_private=allow_private)


@pytest.mark.parametrize(("url", "reason"), PRIVATE)
def test_private_and_loopback_need_allow_private(url: str, reason: str) -> None:
    with pytest.raises(EndpointRefused, match=reason) as info:
        check_endpoint(url, allow_private=False)
    assert "--allow-private-endpoint" in str(info.value)
    check_endpoint(url, allow_private=True)


@pytest.mark.parametrize("url", PUBLIC)
def test_public_addresses_pass(url: str) -> None:
    check_endpoint(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://8.8.8.8:70", "http:// or https://"),
        ("8.8.8.8:9000", "http:// or https://"),
        ("http://", "no host"),
        ("http://8.8.8.8:99999", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
    ],
)
def test_malformed_urls(url: str, reason: str) -> None:
    with pytest.raises(EndpointRefused, match=reason):
        check_endpoint(url, allow_private=True)


def test_credentials_in_the_url_are_refused_and_never_echoed() -> None:
    for url in ("http://AKIAEXAMPLE:s3cr3t-Pa55@8.8.8.8", "http://s3cr3t-Pa55@8.8.8.8", "http://:s3cr3t-Pa55@8.8.8.8"):
        with pytest.raises(EndpointRefused, match="must not carry credentials") as info:
            check_endpoint(url, allow_private=True)
        assert "s3cr3t-Pa55" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_every_resolved_address_is_checked() -> None:
    """A name with one public and one metadata address (or a rebinding answer) is refused."""
    calls: list[tuple[str, int]] = []

    def resolver(answer: list[str]):  # type: ignore[no-untyped-def]
        def resolve(host: str, port: int) -> list[str]:
            calls.append((host, port))
            return answer

        return resolve

    check_endpoint("https://tier.example.com", allow_private=False, resolve=resolver(["8.8.8.8", "2001:4860::1"]))
    assert calls == [("tier.example.com", 443)]
    with pytest.raises(EndpointRefused, match=r"tier\.example\.com \(169\.254\.169\.254\) is a cloud metadata"):
        check_endpoint(
            "http://tier.example.com:81", allow_private=True, resolve=resolver(["1.1.1.1", "169.254.169.254"])
        )
    assert calls[-1] == ("tier.example.com", 81)
    with pytest.raises(EndpointRefused, match="private"):
        check_endpoint("http://tier.example.com", allow_private=False, resolve=resolver(["8.8.8.8", "10.0.0.7"]))
    with pytest.raises(EndpointRefused, match="does not resolve"):
        check_endpoint("http://tier.example.com", allow_private=True, resolve=resolver([]))

    def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(EndpointRefused, match="does not resolve"):
        check_endpoint("http://nowhere.invalid", allow_private=True, resolve=fails)


def test_refusal_is_an_invalid_argument() -> None:
    """The engine lets it through as the S3 error InvalidArgument (400)."""
    with pytest.raises(InvalidArgument) as info:
        check_endpoint("http://169.254.169.254", allow_private=True)
    assert info.value.code == "InvalidArgument"
