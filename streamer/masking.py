"""Secrets out of every text: the credentials in URLs, masked before anything is printed or served.

Camera URLs carry passwords in two places, and both are masked in every URL found in a text:

- the login before the host: FFmpeg splits `user:password@host` at the LAST `@` of the
  authority, so passwords holding `@` work (and are common). Everything before that last `@`
  is masked: `rtsp://admin:p@ss@cam/s` -> `rtsp://***@cam/s`;
- query parameters whose names look like credentials (`user`, `pwd`, `password`, `token`,
  `key`, `auth`, `secret`, `signature`, `sig`, `apikey`, `access_token`, ... and names ending
  in one of them, such as `X-Amz-Signature`): their values are masked, the names kept:
  `http://cam/video.cgi?user=admin&pwd=secret` -> `http://cam/video.cgi?user=***&pwd=***`.

A URL in a text runs from its `scheme://` to the next whitespace, quote or angle bracket. Its
authority is taken up to the first `/`, so a password holding `?` or `#` (which FFmpeg would
misread anyway) is still masked. Errors mask their own messages (`errors.StreamerError`), so an
error text cannot carry a password to a log line, a report, the page or the metrics.
"""

from __future__ import annotations

import re

MASK = "***"

_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s'\"<>]*)")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# Parameter names (lower case, only letters and digits kept) whose values are secrets...
CREDENTIAL_NAMES = frozenset({
    "user", "username", "usr", "login", "loginuse", "loginpas", "pass", "passwd", "password", "pwd", "pw",
    "token", "key", "auth", "secret", "signature", "sig", "apikey", "accesstoken", "credential",
    "credentials", "session", "sessionid", "sid",
})
# ... and the endings that make a name one too (access_token, api_key, X-Amz-Signature, rtsp_user).
CREDENTIAL_ENDINGS = ("user", "username", "password", "passwd", "pass", "pwd", "token", "key", "auth", "secret",
                      "signature", "credential", "credentials", "session")


def is_credential_name(name: str) -> bool:
    """A query parameter whose value is to be masked."""
    plain = _NOT_ALNUM.sub("", name.lower())
    return plain in CREDENTIAL_NAMES or plain.endswith(CREDENTIAL_ENDINGS)


def _mask_query(query: str) -> str:
    parts = re.split(r"([&;])", query)  # keep the separators as they were
    for i in range(0, len(parts), 2):
        name, eq, value = parts[i].partition("=")
        if eq and value and is_credential_name(name):
            parts[i] = f"{name}={MASK}"
    return "".join(parts)


def _mask(match: re.Match) -> str:
    scheme, rest = match.group(1), match.group(2)
    slash = rest.find("/")
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    at = authority.rfind("@")
    if at >= 0:
        authority = f"{MASK}@{authority[at + 1:]}"
    url = authority + tail
    question = url.find("?")  # the query, up to the fragment (the masked login holds no '?')
    if question >= 0:
        hash_at = url.find("#", question)
        end = len(url) if hash_at < 0 else hash_at
        url = url[:question + 1] + _mask_query(url[question + 1:end]) + url[end:]
    return scheme + url


def scrub(text: str) -> str:
    """`text` with the credentials of every URL in it masked (see the module's docstring)."""
    return _URL.sub(_mask, str(text))


def mask_url(url: str) -> str:
    """One URL (or any text) safe to print, log, record and serve."""
    return scrub(url)
