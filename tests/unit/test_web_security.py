"""The web page's guard as plain functions: token loading and matching, Host/Origin rules, bind parsing."""

from __future__ import annotations

import pytest

from streamer.errors import ExitCode
from streamer.web import TOKEN_ENV, TokenError, exposure_warning, load_token, parse_bind
from streamer.web.security import HostPolicy, bearer, cookie_name, query_token, split_host, token_matches


def test_token_from_file_wins_over_the_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-Token_1\n")
    assert load_token(path, {TOKEN_ENV: "other"}) == "s3cret-Token_1"


def test_token_from_the_environment_or_none():
    assert load_token(None, {TOKEN_ENV: " abc123 "}) == "abc123"
    assert load_token(None, {TOKEN_ENV: ""}) is None
    assert load_token(None, {}) is None


@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    ("", "empty"),
    ("  \n", "empty"),
    ("two words", "characters"),
    ("semi;colon", "characters"),
])
def test_a_bad_token_file_is_a_usage_error_naming_the_option(tmp_path, content, words):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenError) as caught:
        load_token(path, {TOKEN_ENV: "fallback"})
    assert caught.value.exit_code == ExitCode.USAGE
    assert "--web-token-file" in str(caught.value) and words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_token_in_the_environment_is_refused():
    with pytest.raises(TokenError, match=TOKEN_ENV):
        load_token(None, {TOKEN_ENV: "has space"})


def test_token_matching_and_bearer_headers():
    assert token_matches("abc", "abc")
    assert not token_matches("abd", "abc")
    assert not token_matches("", "abc")
    assert not token_matches(None, "abc")
    assert not token_matches("é", "abc")
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer   abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None
    assert bearer("Bearer") is None


def test_cookie_name_carries_the_port():
    assert cookie_name(8080) == "streamer_token_8080"
    assert cookie_name(8080) != cookie_name(8081)


@pytest.mark.parametrize("host, name, port", [
    ("localhost:8080", "localhost", "8080"),
    ("LOCALHOST", "localhost", None),
    ("[::1]:9", "::1", "9"),
    ("[::1]", "::1", None),
    ("10.0.0.5:80", "10.0.0.5", "80"),
])
def test_split_host(host, name, port):
    assert split_host(host) == (name, port)


def test_loopback_names_with_any_port_are_allowed():
    policy = HostPolicy("127.0.0.1")
    for host in ("localhost", "localhost:1", "127.0.0.1:8080", "[::1]:40000", "LocalHost:5"):
        assert policy.allows(host), host
    for host in ("evil.example", "evil.example:8080", "127.0.0.2:8080", "", None, "localhost:x",
                 "localhost.evil.example", "0.0.0.0:8080"):
        assert not policy.allows(host), host


def test_the_bind_address_and_allowed_names():
    policy = HostPolicy("10.1.2.3", ["cams.example.org", "proxy.example.org:443", "[fd00::1]"])
    assert policy.allows("10.1.2.3:8080")
    assert policy.allows("cams.example.org")
    assert policy.allows("CAMS.example.org:8443")
    assert policy.allows("proxy.example.org:443")
    assert not policy.allows("proxy.example.org:444")
    assert policy.allows("[fd00::1]:80")
    assert not policy.allows("10.1.2.4:8080")
    assert not HostPolicy("0.0.0.0").allows("0.0.0.0:8080")


def test_an_origin_must_be_the_requests_own_or_an_allowed_host():
    policy = HostPolicy("127.0.0.1", ["cams.example.org", "proxy.example.org:443"])
    own = ("http", "127.0.0.1:8080")
    assert policy.allows_origin("http://127.0.0.1:8080", *own)
    assert policy.allows_origin("HTTP://127.0.0.1:8080/", *own)
    assert policy.allows_origin("http://localhost", "http", "localhost:80")  # the default port made explicit
    assert policy.allows_origin("http://[::1]:8080", "http", "[::1]:8080")
    for other in ("http://localhost:8080",  # another name of this machine: another origin
                  "http://127.0.0.1:3000",  # another port: another origin (cookies would go there)
                  "https://127.0.0.1:8080", "http://evil.example", "null", "file://", "", "http://u@127.0.0.1:8080",
                  "http://127.0.0.1:x", "https://proxy.example.org:8443"):
        assert not policy.allows_origin(other, *own), other
    assert policy.allows_origin("https://cams.example.org", *own)
    assert policy.allows_origin("http://cams.example.org:9000", *own)
    assert policy.allows_origin("https://proxy.example.org", *own)


HEADERS = [
    # (headers a client sends, served?)
    ({}, True),  # VLC, curl, scripts: not a browser
    ({"Origin": "http://127.0.0.1:8080"}, True),  # the page's own WebSocket
    ({"Origin": "http://localhost:3000"}, False),  # another local web app's WebSocket or fetch()
    ({"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}, True),
    ({"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, True),  # typed
    ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}, False),  # <img>
    ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image",
      "Referer": "http://localhost:3000/"}, False),
    ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image",
      "Referer": "https://cams.example.org/dashboard"}, True),  # an allowed host's page embeds a stream
    ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, True),  # a link
    ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}, False),
    ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, False),  # fetch()
    ({"Referer": "http://localhost:3000/"}, False),  # an older browser: the Referer says where from
    ({"Referer": "http://127.0.0.1:8080/"}, True),
]


@pytest.mark.parametrize("headers, served", HEADERS)
def test_requests_from_pages_of_other_origins(headers, served):
    policy = HostPolicy("127.0.0.1", ["cams.example.org"])
    assert policy.from_own_page(headers, "http", "127.0.0.1:8080") is served


def test_forwarded_proto_only_for_the_allowed_hosts():
    policy = HostPolicy("127.0.0.1", ["cams.example.org"])
    assert policy.scheme("http", "cams.example.org", "https") == "https"
    assert policy.scheme("http", "cams.example.org:80", "https, http") == "https"
    assert policy.scheme("http", "127.0.0.1:8080", "https") == "http"  # loopback: nobody in front
    assert policy.scheme("http", "cams.example.org", None) == "http"
    assert policy.scheme("http", "cams.example.org", "gopher") == "http"


@pytest.mark.parametrize("raw, token", [
    ("token=a+b/c=", "a+b/c="),  # as `openssl rand -base64` writes it, pasted into the address
    ("token=a%2Bb%2Fc%3D", "a+b/c="),  # URL-encoded
    ("x=1&token=abc&y=2", "abc"),
    ("tok%65n=abc", "abc"),
    ("x=token", None), ("", None), ("token", None),
])
def test_the_query_token_keeps_plus_signs(raw, token):
    assert query_token(raw) == token


@pytest.mark.parametrize("text, expected", [
    ("8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:8080", ("0.0.0.0", 8080)),
    ("localhost:1", ("localhost", 1)),
    ("[::1]:8080", ("::1", 8080)),
])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "x", "0", "65536", ":8080", "::1:8080", "host:"])
def test_parse_bind_refuses(text):
    with pytest.raises(ValueError):
        parse_bind(text)


def test_one_warning_for_a_wide_host_without_token():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", "tok") is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning and "token" in warning and "\n" not in warning
