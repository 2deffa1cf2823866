"""Keep secrets out of every message: DSNs and URLs are rendered without their passwords."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ("redact_text", "redact_url")

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/db`` becomes ``scheme://user:***@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask URL passwords in free text, and every string in ``secrets``."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out
