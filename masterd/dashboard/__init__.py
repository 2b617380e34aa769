"""
The dashboard's files: HTML, CSS and JavaScript modules shipped as package
data (no Node.js to build or run them), read once at start. Each file is
served under a version made of the hash of all of them, so that browsers
may keep them for a year and a new release is fetched at once.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from attrs import frozen

#: What an asset's name may be: flat, one of the types served.
ASSET_NAME = r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$"
_TYPES = {
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
}
#: Nothing is fetched from outside the master, and no page may frame it.
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    b" connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@frozen
class Asset:
    body: bytes
    contentType: bytes


@frozen
class Assets:
    version: str
    index: bytes
    files: dict[str, Asset]

    def get(self, version: str, name: str) -> Asset | None:
        if version != self.version:
            return None
        return self.files.get(name)


def loadAssets() -> Assets:
    """
    Read the packaged files; the page refers to the others under the
    version (C{{{version}}} in index.html).
    """
    root = resources.files("masterd.dashboard") / "static"
    files: dict[str, Asset] = {}
    template = b""
    digest = hashlib.sha256()
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        data = entry.read_bytes()
        if entry.name == "index.html":
            template = data
        elif re.match(ASSET_NAME, entry.name):
            files[entry.name] = Asset(data, _TYPES[entry.name.rsplit(".", 1)[1]])
        else:
            continue
        digest.update(entry.name.encode() + b"\0" + data + b"\0")
    version = digest.hexdigest()[:16]
    return Assets(version, template.replace(b"{{version}}", version.encode()), files)
