"""
The two distributions: masterd-client (client/, the package masterd_client
and masterctl) and masterd, which depends on it at the same version;
masterd.client is masterd_client under its old name.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import masterd_client
from twisted.trial.unittest import SynchronousTestCase

from masterd._version import __version__ as masterdVersion

ROOT = Path(__file__).resolve().parent.parent


def pyproject(path: Path) -> dict[str, object]:
    with open(path, "rb") as f:
        return tomllib.load(f)


class DistributionTests(SynchronousTestCase):
    def test_sameVersion(self) -> None:
        """
        The client's version is masterd's, and masterd depends on exactly
        it: bump both in masterd/_version.py and
        client/src/masterd_client/_version.py, and the pin in pyproject.toml.
        """
        self.assertEqual(masterd_client.__version__, masterdVersion)
        project = pyproject(ROOT / "pyproject.toml")["project"]
        assert isinstance(project, dict)
        self.assertIn(f"masterd-client=={masterdVersion}", project["dependencies"])
        self.assertNotIn("scripts", project)  # masterctl is the client's

    def test_clientProject(self) -> None:
        """
        No dependency, Python 3.9 and newer, masterctl its console script.
        """
        project = pyproject(ROOT / "client" / "pyproject.toml")["project"]
        assert isinstance(project, dict)
        self.assertEqual(project["name"], "masterd-client")
        self.assertEqual(project["dependencies"], [])
        self.assertEqual(project["requires-python"], ">=3.9")
        self.assertEqual(project["scripts"], {"masterctl": "masterd_client.cli:main"})

    def test_installedEntryPoint(self) -> None:
        try:
            found = distribution("masterd-client")
        except PackageNotFoundError:
            raise self.skipTest("masterd-client is not installed (pip install ./client)") from None
        self.assertEqual(found.version, masterdVersion)
        [script] = [e for e in found.entry_points if e.name == "masterctl"]
        self.assertEqual(script.value, "masterd_client.cli:main")

    def test_oldName(self) -> None:
        """
        Every module of masterd_client is masterd.client's of the same name,
        the same object; so are its names.
        """
        import masterd.client.cli

        for module in pkgutil.iter_modules(masterd_client.__path__):
            if module.name == "__main__":
                continue
            self.assertIs(
                importlib.import_module(f"masterd.client.{module.name}"),
                importlib.import_module(f"masterd_client.{module.name}"),
                module.name,
            )
        self.assertIs(masterd.client.cli, masterd_client.cli)
        self.assertEqual(masterd.client.__all__, masterd_client.__all__)
        for name in masterd_client.__all__:
            self.assertIs(getattr(masterd.client, name), getattr(masterd_client, name), name)

    def test_runAsModule(self) -> None:
        """
        C{python -m masterd_client} (for a DCC's Python, with no console
        script on its PATH) and the old C{python -m masterd.client.cli} are
        masterctl.
        """
        for module in ["masterd_client", "masterd.client.cli"]:
            result = subprocess.run(
                [sys.executable, "-m", module, "--version"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            self.assertEqual(
                (result.returncode, result.stdout, result.stderr),
                (0, f"masterctl {masterdVersion}\n", ""),
                module,
            )
