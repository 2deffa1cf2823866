"""The Lua scripts of the sink (``*.lua`` beside this module), addressed by SHA1 for EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources

__all__ = ("PROMOTE", "READ", "WRITE", "LuaScript")


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    @classmethod
    def packaged(cls, filename: str) -> LuaScript:
        text = resources.files("sinks.redis").joinpath(filename).read_text(encoding="utf-8")
        return cls(filename, text)


WRITE = LuaScript.packaged("write.lua")
"""Apply a batch and move the checkpoint (see the header of write.lua)."""
READ = LuaScript.packaged("read.lua")
"""Read documents of the live generation."""
PROMOTE = LuaScript.packaged("promote.lua")
"""Make a filled generation live."""
