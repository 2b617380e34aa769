"""
What masterctl's commands work with: the client, the output streams, and
the clock, all replaceable so that tests run without a network, a terminal
or real waiting.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from ._client import Client
from ._compat import UTC
from ._http import Opener
from ._output import dump_json


class UsageError(Exception):
    """
    Arguments that name nothing, or several things (an agent id prefix
    that matches no agent): masterctl prints the one line and exits 2, as
    for its other bad arguments.
    """


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """
    The world masterctl runs in; the defaults are the real one.
    """

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    #: What C{submit --file -} reads.
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    opener: Opener | None = None
    sleep: Callable[[float], object] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = _now
    #: Whether C{out} is a terminal; None: ask it.
    tty: bool | None = None
    #: The terminal's width, asked again at each redraw (it may be resized).
    columns: Callable[[], int] = lambda: shutil.get_terminal_size().columns

    def is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        isatty = getattr(self.out, "isatty", None)
        return bool(isatty and isatty())


@dataclass
class Context:
    """
    One command's view: the runtime, a client, and whether to print JSON.
    """

    runtime: Runtime
    client: Client
    json: bool = False

    @property
    def out(self) -> TextIO:
        return self.runtime.out

    @property
    def err(self) -> TextIO:
        return self.runtime.err

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def note(self, text: str) -> None:
        """
        A remark for the person (not the output): on stderr.
        """
        self.err.write(f"masterctl: {text}\n")
        self.err.flush()

    def emit(self, document: Any, human: Callable[[], str]) -> None:
        """
        The server's document as JSON with C{--json}, else C{human()}.
        """
        self.write(dump_json(document) if self.json else human())
