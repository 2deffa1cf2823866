"""Keep secrets out of every message: DSNs and URLs are rendered without their passwords."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ("redact_text", "redact_url")

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:password|passwd|pwd|sslpassword|secret|api_key|apikey|token)=)[^&\s#'\"]*",
    re.IGNORECASE,
)
"""A secret passed as a URL's query parameter (``?password=...``, which libpq and asyncpg
accept as well as ``user:password@``)."""


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/db`` becomes ``scheme://user:***@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return _QUERY_SECRET.sub(lambda m: f"{m['name']}***", url)
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    masked = urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}***", masked)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask URL passwords in free text, and every string in ``secrets``."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    out = _QUERY_SECRET.sub(lambda m: f"{m['name']}***", out)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out
