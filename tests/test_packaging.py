"""
The distribution ships every package of masterd: a package missing from
pyproject.toml passes every test run from the source tree and breaks every
installed master. And the clone stays clean: what the documented commands
create in it is ignored by git.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

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


class GitignoreTests(SynchronousTestCase):
    def created(self) -> list[str]:
        """
        What the README's and the quickstart's commands create in the clone:
        pid files, the agents' state directories, the embedded PostgreSQL's
        data, the quickstart's virtualenv.
        """
        text = "\n".join((ROOT / name).read_text() for name in ("README.md", "docs/quickstart.md"))
        paths = ["twistd.pid", "twistd.log"]  # twistd's defaults
        paths += re.findall(r"--pidfile[= ](\S+)", text)
        paths += [f"{d}/agent.json" for d in re.findall(r"--state-dir (\S+)", text)]
        paths += [f"{d}/bin/python" for d in re.findall(r"-m venv (\S+)", text)]
        config = (ROOT / "etc" / "master.yaml").read_text()
        for found in re.findall(r"data_dir: (\S+)", config):
            data = (ROOT / "etc" / found).resolve().relative_to(ROOT)
            paths.append(f"{data.as_posix()}/PG_VERSION")
        return paths

    def test_documentedCommandsLeaveTheCloneClean(self) -> None:
        git = shutil.which("git")
        if git is None or not (ROOT / ".git").exists():
            raise SkipTest("not a git checkout")
        paths = self.created()
        # The patterns above must find what the docs say, or this proves nothing.
        for expected in ("a1.pid", "agent1.pid", "var/agent1/agent.json",
                         "var/pgdata/PG_VERSION", "venv/bin/python"):  # fmt: skip
            self.assertIn(expected, paths)
        result = subprocess.run(
            [git, "check-ignore", "--no-index", "--verbose", "--non-matching", *paths],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        missing = [line.split("\t", 1)[1] for line in result.stdout.splitlines()
                   if line.startswith("::")]  # fmt: skip
        self.assertEqual(missing, [], result.stderr)
