"""
The distribution ships every package of masterd: a package missing from
pyproject.toml passes every test run from the source tree and breaks every
installed master.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class PackagingTests(SynchronousTestCase):
    def test_everyPackageListed(self) -> None:
        config = tomllib.loads((ROOT / "pyproject.toml").read_text())
        listed = set(config["tool"]["setuptools"]["packages"])
        found = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for init in (ROOT / "masterd").rglob("__init__.py")
        }
        self.assertEqual(sorted(found - listed), [])
        self.assertIn("twisted.plugins", listed)
        self.assertFalse((ROOT / "twisted" / "__init__.py").exists())
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())
