"""Credentials in URLs: every shape a camera URL takes, masked in URLs and in texts; errors mask themselves."""

from __future__ import annotations

import pytest

from streamer.capture import LiveCapture
from streamer.errors import FinalSourceError, SourceError, StreamerError
from streamer.masking import is_credential_name
from streamer.sources import mask_url, scrub

URLS = [
    # (url, masked) -- the login: everything before the authority's LAST '@'
    ("rtsp://admin:hunter2@cam.local:554/stream1", "rtsp://***@cam.local:554/stream1"),
    ("rtsp://admin:p@ss@cam/s", "rtsp://***@cam/s"),
    ("rtsp://admin:p@ss@w@rd@10.0.0.9:554/Streaming/Channels/101", "rtsp://***@10.0.0.9:554/Streaming/Channels/101"),
    ("rtsp://user@cam/s", "rtsp://***@cam/s"),
    ("rtsp://:secret@cam/s", "rtsp://***@cam/s"),
    ("rtsps://admin:pa:ss@[fe80::1]:322/s", "rtsps://***@[fe80::1]:322/s"),
    ("rtsp://admin:pa%40ss@cam/s", "rtsp://***@cam/s"),
    ("rtsp://admin:pa?ss#x@cam/s", "rtsp://***@cam/s"),  # ? and # inside the login (unencoded)
    ("rtsp://admin:secret@cam", "rtsp://***@cam"),  # no path
    ("http://cam/a@b/c", "http://cam/a@b/c"),  # an '@' in the path is no login
    ("rtsp://cam.local:554/stream1", "rtsp://cam.local:554/stream1"),
    # the query: values of credential-like names
    ("http://cam/video.cgi?user=admin&pwd=secret", "http://cam/video.cgi?user=***&pwd=***"),
    ("http://cam/videostream.cgi?loginuse=admin&loginpas=secret&res=0",
     "http://cam/videostream.cgi?loginuse=***&loginpas=***&res=0"),
    ("http://cam/mjpg?password=secret;resolution=640x480", "http://cam/mjpg?password=***;resolution=640x480"),
    ("rtsp://cam/live?token=abc.def-ghi&channel=1", "rtsp://cam/live?token=***&channel=1"),
    ("https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d&X-Amz-Expires=60",
     "https://bucket.s3.amazonaws.com/v.mp4?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://cdn/live.m3u8?sig=abc&exp=1&api_key=k1&access_token=t1&apikey=k2&auth=a#frag",
     "https://cdn/live.m3u8?sig=***&exp=1&api_key=***&access_token=***&apikey=***&auth=***#frag"),
    ("http://cam/cgi?USER=admin&Pass=x&secret=s&key=k&username=u&signature=g",
     "http://cam/cgi?USER=***&Pass=***&secret=***&key=***&username=***&signature=***"),
    ("http://cam/cgi?flag&user=&keyframe=2&monkey=3", "http://cam/cgi?flag&user=&keyframe=2&monkey=***"),
    # both at once
    ("rtsp://admin:p@ss@cam:554/s?user=admin&pwd=p@ss", "rtsp://***@cam:554/s?user=***&pwd=***"),
    ("http://cam?user=a&pwd=b", "http://cam?user=***&pwd=***"),  # a query right after the host
]


@pytest.mark.parametrize("url, masked", URLS)
def test_every_url_shape_is_masked(url, masked):
    assert mask_url(url) == masked
    assert mask_url(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize("url, masked", URLS)
def test_urls_inside_texts_are_masked_where_they_stand(url, masked):
    # a URL ends at whitespace, a quote or an angle bracket (a last query value takes any
    # punctuation that follows it: masked with it, as it may belong to the secret)
    for before, after in (("cannot open ", " (connection refused)"), ("'", "'"), ('"', '"'), ("<", ">"),
                          ("", "\nnext line")):
        assert scrub(f"{before}{url}{after}") == f"{before}{masked}{after}"


def test_several_urls_in_one_text():
    text = "could not open 'rtsp://u:p@h/a' nor rtsps://user@h2:322/b?pwd=x), but http://h3/c?x=1 is fine"
    assert scrub(text) == "could not open 'rtsp://***@h/a' nor rtsps://***@h2:322/b?pwd=*** but http://h3/c?x=1 is fine"


@pytest.mark.parametrize("name", ["user", "Username", "PWD", "passwd", "access_token", "api-key", "X-Amz-Signature",
                                  "sig", "loginpas", "session_id", "rtsp_user", "auth", "secret", "credentials"])
def test_credential_names(name):
    assert is_credential_name(name)


@pytest.mark.parametrize("name", ["res", "channel", "subtype", "resolution", "fps", "keyframe", "exp", "stream"])
def test_other_names_are_kept(name):
    assert not is_credential_name(name)


def test_errors_mask_their_own_message_and_reason():
    secret = "rtsp://admin:p@ss@cam/s?pwd=hunter2"
    for err in (StreamerError(f"cannot open {secret}"), SourceError(f"cannot open {secret}"),
                FinalSourceError(f"{secret}: refused", reason=f"refused by {secret}")):
        assert "p@ss" not in str(err) and "hunter2" not in str(err)
        assert "rtsp://***@cam/s?pwd=***" in str(err) and err.message == str(err)
    no_reason = SourceError(f"cannot open {secret}")  # a reason falls back to the message: masked too
    assert no_reason.reason == "cannot open rtsp://***@cam/s?pwd=***"


class _Broken:
    """A reader whose frames raise a bug (not a SourceError) that names the URL."""

    finite = False

    def open(self):
        pass

    def images(self):
        raise ValueError("bug while reading rtsp://admin:p@ss@cam/s")

    def close(self):
        pass


def test_a_capture_that_fails_with_a_bug_gives_a_short_masked_reason():
    from streamer.settings import CaptureSettings
    from streamer.sources import classify_source

    spec = classify_source("rtsp://admin:p@ss@cam/s")
    capture = LiveCapture(spec, _Broken(), CaptureSettings(), log=lambda m: None)
    capture.start(lambda frame: None, connect=True)
    capture.join(timeout=10)
    assert capture.error is not None
    assert "p@ss" not in str(capture.error) and "ss@cam" not in str(capture.error)
    assert capture.down_reason == "given up: capture failed (ValueError; see the log)"
