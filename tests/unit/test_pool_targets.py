"""--triton with several servers: parsing, de-duplication, and what a dns:/// name stands for."""

from __future__ import annotations

import socket

import pytest

from streamer.triton import Target, parse_targets, resolve
from streamer.settings import SettingsError


def test_a_list_of_servers_drops_duplicates_and_keeps_the_order():
    targets = parse_targets("b:8001, a:9001,b:8001,a")
    assert [t.text for t in targets] == ["b:8001", "a:9001", "a:8001"]


def test_dns_names_and_grpc_urls():
    assert parse_targets("dns:///triton-headless:8001") == (Target("triton-headless", 8001, dns=True),)
    assert parse_targets("grpc://h:5") == (Target("h", 5),)
    assert parse_targets("[::1]:8001")[0].text == "[::1]:8001"


@pytest.mark.parametrize("text, message", [
    ("http://h:8000", "not a http URL"), (":8001", "missing host"), ("h:", "port must be"), ("h:99999", "port must be"), (",", "no server"),
])
def test_bad_targets_are_named(text, message):
    with pytest.raises(SettingsError, match=message):
        parse_targets(text)


def fake_getaddrinfo(table):
    def getaddrinfo(host, port, type=0):
        if host not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port)) for a in table[host]]

    return getaddrinfo


def test_a_plain_name_stays_one_server_even_when_it_has_two_addresses():
    lookup = fake_getaddrinfo({"localhost": ["127.0.0.1", "::1"]})
    assert resolve(parse_targets("localhost:8001"), lookup) == ["localhost:8001"]


def test_a_dns_name_is_every_address_it_resolves_to_once():
    lookup = fake_getaddrinfo({"pods": ["10.0.0.7", "10.0.0.5", "10.0.0.7"], "other": ["10.0.0.5"]})
    urls = resolve(parse_targets("dns:///pods:8001,dns:///other:8001,dns:///gone:8001"), lookup)
    assert urls == ["10.0.0.5:8001", "10.0.0.7:8001"]  # sorted, duplicates dropped, unresolved names give none
