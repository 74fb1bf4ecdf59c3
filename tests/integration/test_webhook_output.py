"""WebhookOutput against a real local HTTP server (http.server on a free loopback port): retries on
5xx and timeouts with backoff, none on 4xx, a bounded give-up, the HMAC signature, order."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace

import pytest

from streamer.events import OutputState
from streamer.events.destinations import WebhookSettings, event_settings
from streamer.events.webhook import WebhookOutput
from tests.event_values import lifecycle
from tests.helpers import wait_until
from tests.webhooks import GARBAGE, Receiver


def webhook(receiver: Receiver, said: list, secret=None, **kw) -> WebhookOutput:
    settings = WebhookSettings((receiver.url,), secret=secret, timeout=kw.pop("timeout", 2.0),
                               give_up_s=kw.pop("give_up_s", 20.0))
    return WebhookOutput(receiver.url, settings, said.append, backoff=(0.1, 0.4), **kw)


def test_500_twice_then_200_signed_in_order(tmp_path):
    said = []
    secret = b"key from a file"
    with Receiver(lambda n: 500 if n < 2 else 200) as receiver:
        with webhook(receiver, said, secret=secret) as out:
            for event in lifecycle(track_id=1) + lifecycle(track_id=2):
                out.publish(event)
            wait_until(lambda: out.status().sent == 6, 20, what="6 events delivered")
        requests = receiver.requests
    assert len(requests) == 8  # the first event was tried three times
    assert requests[0]["body"] == requests[1]["body"] == requests[2]["body"]
    assert len({r["headers"]["X-Streamer-Delivery"] for r in requests[:3]}) == 1  # one delivery id per event
    delivered = [json.loads(r["body"]) for r in requests[2:]]
    assert [(e["type"], e["after"]["track_id"]) for e in delivered] == [
        (k, t) for t in (1, 2) for k in ("new", "update", "end")]
    for r in requests:
        expected = "sha256=" + hmac.new(secret, r["body"], hashlib.sha256).hexdigest()
        assert r["headers"]["X-Streamer-Signature"] == expected
        assert r["headers"]["Content-Type"] == "application/json"
        assert r["headers"]["X-Streamer-Event"] == json.loads(r["body"])["type"]
    assert requests[1]["at"] - requests[0]["at"] >= 0.09  # backoff between tries
    status = out.status()
    assert (status.sent, status.failed, status.dropped, status.state) == (6, 0, 0, OutputState.CLOSED)
    assert any("HTTP 500" in line and "retrying" in line for line in said)
    assert all("s3cr3t" not in line for line in said) and "s3cr3t" not in out.name


def test_4xx_not_retried_and_no_signature_without_secret():
    said = []
    with Receiver(lambda n: 404 if n == 0 else 200) as receiver:
        with webhook(receiver, said) as out:
            for event in lifecycle():
                out.publish(event)
            wait_until(lambda: out.status().sent == 2, 10, what="the two later events")
            status = out.status()
        assert len(receiver.requests) == 3
        assert "X-Streamer-Signature" not in receiver.requests[0]["headers"]
    assert (status.failed, status.state) == (1, OutputState.CONNECTED)
    assert any("HTTP 404 (not retried)" in line for line in said)


def test_an_answer_that_is_not_http_is_retried_and_the_output_goes_on():
    """A receiver that answers garbage (not an HTTP status line) is a failed try like a 5xx: the
    output retries, delivers, and stays up for the next events."""
    said = []
    with Receiver(lambda n: GARBAGE if n < 2 else 200) as receiver:
        with webhook(receiver, said) as out:
            for event in lifecycle():
                out.publish(event)
            wait_until(lambda: out.status().sent == 3, 20, what="3 events delivered after 2 garbage answers")
        assert len(receiver.requests) == 5
    status = out.status()
    assert (status.sent, status.failed, status.state) == (3, 0, OutputState.CLOSED)
    assert not any("stopped" in line for line in said) and any("retrying" in line for line in said)


def test_timeouts_retried_then_given_up_after_a_bounded_time():
    said = []
    with Receiver(lambda n: ("sleep", 1.0, 200)) as receiver:  # always slower than the timeout
        out = webhook(receiver, said, timeout=0.3, give_up_s=1.5)
        with out:
            out.publish(lifecycle()[0])
            wait_until(lambda: out.status().failed == 1, 10, what="the event given up")  # bounded: not retried forever
            status = out.status()
    assert status.state is OutputState.GIVEN_UP and "timed out" in status.reason
    assert len(receiver.requests) >= 2
    assert any("given up" in line for line in said)


def test_secret_from_file_or_environment(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    url = "https://hooks.example/abc"
    found = event_settings(webhooks=(url,), webhook_secret_file=secret_file, env={})
    assert found.webhooks.secret == b"from-file" and "from-file" not in repr(found)
    assert "abc" not in repr(found) and "hooks.example/***" in repr(found)  # a URL's path may be a token
    assert event_settings(webhooks=(url,), env={"STREAMER_WEBHOOK_SECRET": "env"}).webhooks.secret == b"env"
    assert event_settings(webhooks=(url,), env={}).webhooks.secret is None
    assert replace(found.webhooks, secret=None).urls == (url,)


@pytest.mark.parametrize("bad", ["ftp://x/y", "hooks.example/x", "http:///nohost", "http://h/a s3cr3t",
                                 "http://h/a\ts3cr3t", "http://h:port/s3cr3t"])
def test_bad_urls(bad):
    """Refused at start, naming no part of the path (a URL urllib cannot send would otherwise stop
    the output mid-run with an error that quotes the path, its token included)."""
    from streamer.settings import SettingsError

    with pytest.raises(SettingsError, match="--webhook") as err:
        event_settings(webhooks=(bad,), env={})
    assert "s3cr3t" not in str(err.value)
