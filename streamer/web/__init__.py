"""The browser live view (issue 17): every camera in a page, served by aiohttp.

    display.py   WebDisplay: the `stages.Display` (server thread, lifetime, show())
    feed.py      what viewers get: newest views, shared encodes, newest-only viewers
    fmp4.py      H.264 for slow links: a live libx264 encoder, fragmented MP4 for MSE
    app.py       routes and the guard in front of them
    security.py  token, Host/Origin checks, headers
    state.py     a camera's view as JSON (names only, texts masked)
    static/      the page: index.html, app.js, style.css (no build step, no CDN)
"""

from .display import DEFAULT_MAX_VIEWERS, DEFAULT_PORT, LOOPBACK, WebDisplay, bind_socket, parse_bind
from .security import TOKEN_ENV, TokenError, exposure_warning, load_token

__all__ = [
    "DEFAULT_MAX_VIEWERS", "DEFAULT_PORT", "LOOPBACK", "TOKEN_ENV", "TokenError", "WebDisplay", "bind_socket",
    "exposure_warning", "load_token", "parse_bind",
]
