"""Who may see the page: the token, the Host and Origin checks, the response headers.

A camera page shows what the cameras see, so it is guarded as users of such pages expect
(Frigate's GHSA-mgh5-cr9h-g6hr leaked `rtsp://user:pass@` URLs to its viewers):

- an optional token, read from a file or the environment (never a command-line value, which
  `ps` shows), compared in constant time, accepted as `Authorization: Bearer TOKEN`, as
  `?token=TOKEN` on any route and as a cookie named with the port (the page's `?token=` sets it
  and redirects to the URL without the token);
- the `Host` header (DNS rebinding): loopback names with any port, the bind address and the
  names the user allows;
- the pictures and the state are for the page's own origin: a request that a browser says comes
  from a page of another origin (another port counts: browsers send SameSite cookies across
  ports) is refused, whatever its token or cookie (`HostPolicy.from_own_page`):
  `Origin` (every WebSocket, every CORS request) must equal the request's own scheme and Host,
  or name a host of `--web-allowed-hosts`; without `Origin`, `Sec-Fetch-Site` must be
  `same-origin` or `none` (an address typed or a bookmark), or the request a top-level
  navigation (a link opening a stream in its own tab); where a browser sends neither, a
  `Referer` must be of the same origin. Clients that are not browsers (VLC, curl, scripts) send
  none of these and are served;
- `X-Forwarded-Proto` is believed only for requests whose Host is a name of `--web-allowed-hosts`
  (the names a TLS-terminating proxy publishes the page under): then the cookie is `Secure` and
  `https` is the request's own scheme;
- headers: no caching, no sniffing, no referrer, a CSP that allows only the page's own files and
  forbids framing. GET only.

Everything here is plain functions of strings, so the rules are tested without a server.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ..errors import ExitCode, StreamerError

TOKEN_ENV = "STREAMER_WEB_TOKEN"
TOKEN_PARAM = "token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Characters a token may hold: what base64, base64url and hex produce (they travel in a cookie
# and a query string unquoted, so nothing that needs quoting there).
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")



class TokenError(StreamerError):
    """The token cannot be had (a token file missing, unreadable, empty, or with odd characters):
    a usage error, exit 2, like settings.SettingsError (not imported here: settings may import this)."""

    exit_code = ExitCode.USAGE


SECURITY_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def check_token(token: str, where: str) -> str:
    if not _TOKEN_CHARS.match(token):
        raise TokenError(f"the web token from {where} holds characters other than letters, digits and "
                            f"._~+/=- (use e.g. the output of `openssl rand -hex 32`)")
    return token


def load_token(path: Optional[os.PathLike] = None, env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The page's token: the contents of `path` if given (surrounding whitespace dropped), else
    `$STREAMER_WEB_TOKEN` from `env` (default: os.environ); None when the variable is unset or
    empty (no token). A token file that cannot be read or is empty is an error (TokenError,
    exit 2): whoever names a file means to have a token."""
    if path is not None:
        where = f"--web-token-file {path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenError(f"{where}: no such file; write the token into it "
                                f"(e.g. openssl rand -hex 32 > {path})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise TokenError(f"{where}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
        token = text.strip()
        if not token:
            raise TokenError(f"{where}: the file is empty; write the token into it, or leave the option out "
                                f"to serve the page without a token")
        return check_token(token, where)
    token = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return check_token(token, TOKEN_ENV) if token else None


def query_token(raw_query: str) -> Optional[str]:
    """The `token` parameter of a raw (undecoded) query string, percent-decoded but with `+`
    kept as `+` (a token never holds a space, and base64 tokens hold `+`): `?token=a+b/c=`
    and `?token=a%2Bb%2Fc%3D` both give `a+b/c=`. None when there is none."""
    for part in raw_query.split("&"):
        name, eq, value = part.partition("=")
        if eq and unquote(name) == TOKEN_PARAM:
            return unquote(value)
    return None


def token_matches(given: Optional[str], token: str) -> bool:
    """Constant-time comparison (the time taken does not tell how much of a guess was right)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def bearer(authorization: Optional[str]) -> Optional[str]:
    """The token of an `Authorization: Bearer TOKEN` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def cookie_name(port: int) -> str:
    """The token cookie's name: per port, so two instances on one host keep their own."""
    return f"streamer_token_{int(port)}"


def split_host(host: str) -> Tuple[str, Optional[str]]:
    """`name[:port]` or `[v6][:port]` -> (lower-case name without brackets, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[1:end], host[end + 1:]
        return name, (rest[1:] if rest.startswith(":") else None)
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


def _normal(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


class HostPolicy:
    """Which names the page answers to: loopback names with any port, the bind address and the
    names in `allowed` (each a name, optionally with a port: then only that port)."""

    def __init__(self, bind_host: str, allowed: Iterable[str] = ()):
        self.names = set(LOOPBACK_NAMES)
        bind = _normal(bind_host)
        if bind and bind not in ("0.0.0.0", "::"):
            self.names.add(bind)
        self.allowed_names = set()  # the user's names (--web-allowed-hosts) without a port
        self.with_port = set()
        for entry in allowed:
            entry = entry.strip()
            if not entry:
                continue
            name, port = split_host(entry)
            if port:
                self.with_port.add((_normal(name), port))
            else:
                self.names.add(_normal(name))
                self.allowed_names.add(_normal(name))

    def allows(self, host: Optional[str]) -> bool:
        """`host` as a Host header gives it (`name:port`)."""
        if not host:
            return False
        name, port = split_host(host)
        if port is not None and not port.isdigit():
            return False
        name = _normal(name)
        return name in self.names or (name, port) in self.with_port

    def allowed_name(self, host: Optional[str]) -> bool:
        """`host` (a Host header or an origin's `name[:port]`) is one of `--web-allowed-hosts`."""
        if not host:
            return False
        name, port = split_host(host)
        return self._allowed(_normal(name), port)

    def _allowed(self, name: str, port: Optional[str]) -> bool:
        return name in self.allowed_names or (name, port) in self.with_port

    def allows_origin(self, origin: Optional[str], scheme: str, host: Optional[str]) -> bool:
        """An `Origin` (or a `Referer`'s origin): the request's own `scheme://host`, or an http(s)
        origin on a name of `--web-allowed-hosts`. Another port is another origin."""
        other = origin_key(origin)
        if other is None:
            return False
        own = origin_key(f"{scheme}://{host}") if host else None
        if other == own:
            return True
        _, name, port = other
        return self._allowed(name, port)

    def from_own_page(self, headers: Mapping[str, str], scheme: str, host: Optional[str]) -> bool:
        """False when a browser says this request comes from a page of another origin (see the
        module's docstring); True for the page's own requests and for clients that are not browsers."""
        origin = headers.get("Origin")
        if origin is not None:  # a WebSocket, a CORS request: the browser names the page
            return self.allows_origin(origin, scheme, host)
        site = headers.get("Sec-Fetch-Site")
        if site is not None:
            if site.lower() in ("same-origin", "none"):
                return True
            mode, dest = headers.get("Sec-Fetch-Mode", "").lower(), headers.get("Sec-Fetch-Dest", "").lower()
            if mode == "navigate" and dest in ("document", ""):
                return True  # a link that opens the page or a stream in a tab of its own
        referer = headers.get("Referer")
        if referer is not None:
            return self.allows_origin(referer, scheme, host)
        return site is None  # a browser that says the request is cross-site, and not from where

    def scheme(self, request_scheme: str, host: Optional[str], forwarded_proto: Optional[str]) -> str:
        """The scheme the browser used: `X-Forwarded-Proto` (its first value) when the Host is a
        name of `--web-allowed-hosts` (a proxy in front), else the connection's own."""
        if forwarded_proto and self.allowed_name(host):
            proto = forwarded_proto.split(",")[0].strip().lower()
            if proto in ("http", "https"):
                return proto
        return request_scheme


DEFAULT_PORTS = {"http": "80", "https": "443"}


def origin_key(url: Optional[str]) -> Optional[Tuple[str, str, str]]:
    """(scheme, host name, port) of an http(s) URL or origin, the port made explicit; None for
    anything else (`null`, `file://`, garbage)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    name, port = split_host(parts.netloc)
    if port is not None and not port.isdigit():
        return None
    return scheme, _normal(name), str(int(port)) if port else DEFAULT_PORTS[scheme]


def is_loopback(host: str) -> bool:
    name = _normal(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: Optional[str]) -> Optional[str]:
    """The one warning for a page served beyond this machine without a token (None: nothing to say)."""
    if token or is_loopback(host):
        return None
    return (f"warning: the web page on {host} has no token: anyone who reaches this address sees every camera; "
            f"set one with --web-token-file FILE or STREAMER_WEB_TOKEN")
