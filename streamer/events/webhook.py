"""Webhooks: each event's JSON POSTed to a URL, retried with backoff, optionally signed.

    POST URL
    Content-Type: application/json
    X-Streamer-Event: new | update | end
    X-Streamer-Delivery: <uuid, the same on every retry of one event>
    X-Streamer-Signature: sha256=<hex HMAC-SHA256 of the body>     (with a secret)

One event at a time, in order, from a bounded queue on the output's own thread. A timeout, a
connection that fails, 5xx, 408 and 429 are retried with backoff (0.5 s doubling to 8 s) until
`give_up_s` has passed since the first try, then the event counts as failed; any other 4xx is
final at once (the receiver refused this request; sending it again cannot help). The URL is
printed as scheme://host:port/*** (a path or query often holds a token).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Optional

from .destinations import WebhookSettings, mask_url
from .queued import QueuedOutput, Say
from .types import Event, OutputState

QUEUE = 1000
BACKOFF = (0.5, 8.0)
RETRIED = {408, 429}  # the 4xx worth retrying: request timeout, too many requests
USER_AGENT = "streamer-webhook/1"


def signature(secret: bytes, body: bytes) -> str:
    """The X-Streamer-Signature value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Attempt:
    """How one POST went: ok, or why not and whether trying again may help."""

    def __init__(self, ok: bool, reason: Optional[str] = None, retry: bool = False):
        self.ok, self.reason, self.retry = ok, reason, retry


def post(url: str, body: bytes, headers: dict, timeout: float) -> Attempt:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(65536)
            return Attempt(True)
    except urllib.error.HTTPError as err:
        err.close()
        retry = err.code >= 500 or err.code in RETRIED
        return Attempt(False, f"HTTP {err.code}" + ("" if retry else " (not retried)"), retry)
    except urllib.error.URLError as err:
        reason = err.reason
        text = "timed out" if isinstance(reason, TimeoutError) else getattr(reason, "strerror", None) or str(reason)
        return Attempt(False, text, True)
    except (TimeoutError, OSError) as err:
        return Attempt(False, "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err)), True)
    except http.client.HTTPException as err:  # an answer that is not HTTP (BadStatusLine, IncompleteRead...)
        return Attempt(False, f"not an HTTP answer ({type(err).__name__})", True)
    except ValueError:  # http.client.InvalidURL: its message quotes the URL's path (a token): never shown
        return Attempt(False, "the URL cannot be sent (not retried)", False)


class WebhookOutput(QueuedOutput):
    """--webhook URL: the EventOutput that POSTs every event to one URL."""

    def __init__(self, url: str, settings: WebhookSettings, log: Say, capacity: int = QUEUE,
                 backoff=BACKOFF, index: Optional[int] = None):
        name = f"webhook {mask_url(url)}" if index is None else f"webhook {index} {mask_url(url)}"
        super().__init__(name, capacity, log, drain_s=min(settings.give_up_s, 10.0))
        self.url = url
        self.settings = settings
        self.backoff = backoff
        self.attempts = 0

    def begin(self) -> None:
        self.set_state(OutputState.CONNECTED)

    def on_state(self, state: OutputState, reason: Optional[str]) -> None:
        if state is OutputState.RETRYING:
            self.say_once(f"retry {reason}", f"WARNING: {self.name}: {reason}; retrying with backoff "
                                             f"(an event is given up after {self.settings.give_up_s:g} s)")
        elif state is OutputState.GIVEN_UP:
            self.say_once(f"gave up {reason}", f"WARNING: {self.name}: an event was given up ({reason})")

    def handle(self, event: Event) -> None:
        body = json.dumps(event.to_json()).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Streamer-Event": str(event.kind), "X-Streamer-Delivery": str(uuid.uuid4())}
        if self.settings.secret is not None:
            headers["X-Streamer-Signature"] = signature(self.settings.secret, body)
        first = time.monotonic()
        delay = self.backoff[0]
        while True:
            self.attempts += 1
            attempt = post(self.url, body, headers, self.settings.timeout)
            if attempt.ok:
                self.count(sent=1)
                self.set_state(OutputState.CONNECTED)
                return
            waited = time.monotonic() - first
            if not attempt.retry or waited + delay > self.settings.give_up_s or self.past_deadline():
                self.count(failed=1)
                why = attempt.reason if not attempt.retry else f"{attempt.reason}, for {waited:.0f} s"
                self.set_state(OutputState.GIVEN_UP, why)
                return
            self.set_state(OutputState.RETRYING, attempt.reason)
            self.wait(delay)
            delay = min(delay * 2, self.backoff[1])
