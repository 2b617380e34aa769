"""
C{twistd masterd-agent}: the reference agent's options and service.

    twistd -n masterd-agent --master ws://HOST:8080 --token TOKEN

Options may also come from a YAML file (C{--config}), whose keys are the
long option names (C{master} may be a list); the command line wins.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import yaml
from twisted.application.service import IService
from twisted.python import usage

from masterd._version import __version__

from .capabilities import capabilities
from .connection import AgentService, AgentSettings
from .gpus import offeredDevices
from .openjd import DEFAULT_LINGER_S, pathMappingRules
from .runner import Runner
from .statedir import StateDirectoryBusy, agentID, lockStateDir, readCredential

TOKEN_ENV = "MASTERD_AGENT_TOKEN"
_KEYS = {"master", "token", "state-dir", "max-tasks", "tag", "hostname", "gpus"}
#: OpenJD tasks (docs/agent.md, "OpenJD tasks"); path-mapping in the file only.
_KEYS |= {"path-mapping", "openjd-linger-s"}
#: What it declares beyond its hardware (docs/agent.md, "Capabilities").
_KEYS |= {"cpus", "ram-mb", "attributes", "amounts"}


def defaultStateDir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "masterd-agent")


class Options(usage.Options):
    synopsis = "--master URL [--master URL ...] [--token TOKEN] [options]"
    longdesc = "Run a masterd render agent. See docs/agent.md."
    optParameters = [
        ["config", "c", None, "A YAML file with any of these options."],
        ["token", "t", None, f"The agent token, to enroll (default: ${TOKEN_ENV})."],
        ["state-dir", "s", None, "Where the agent keeps its id and its tasks' state."],
        ["max-tasks", "n", None, "How many tasks to run at once (default 1)."],
        ["hostname", None, None, "The name to report (default: the host name)."],
        ["gpus", None, None, "How many GPUs to offer (default: those nvidia-smi lists)."],
    ]

    optParameters += [
        ["openjd-linger-s", None, None,
         f"How long an OpenJD session waits for its job's next task ({DEFAULT_LINGER_S:g} s)."],
    ]  # fmt: skip

    optParameters += [
        ["cpus", None, None, "How many cpus to report (default: those detected)."],
        ["ram-mb", None, None, "How much RAM to report, MB (default: what is detected)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["master"] = []
        self["tag"] = []
        self["attribute"] = []
        self["amount"] = []

    def opt_attribute(self, item: str) -> None:
        """NAME=V1,V2: a custom OpenJD attribute (attr.custom.NAME) and its values; repeatable."""
        self["attribute"].append(item)

    def opt_amount(self, item: str) -> None:
        """NAME=N: a custom OpenJD amount (NAME: amount.custom.NAME); repeatable."""
        self["amount"].append(item)

    def opt_master(self, url: str) -> None:
        """A master URL (ws://host:8080 or http://host:8080); repeat to rotate."""
        self["master"].append(url)

    def opt_tag(self, tag: str) -> None:
        """A tag this agent offers; repeatable."""
        self["tag"].append(tag)

    def postOptions(self) -> None:
        try:
            self["settings"] = self._settings()
        except ValueError as e:
            sys.stderr.write(f"masterd-agent: {e}\n")
            raise SystemExit(2) from None

    def _settings(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        if self["config"]:
            try:
                raw = yaml.safe_load(Path(self["config"]).read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise ValueError(f"{self['config']}: {e}") from None
            if not isinstance(raw, dict):
                raise ValueError(f"{self['config']}: must be a mapping")
            for key, value in raw.items():
                if key not in _KEYS:
                    raise ValueError(f"{self['config']}: {key}: is not a known key")
                merged[key] = value
        for key in ("token", "state-dir", "max-tasks", "hostname", "gpus"):
            if self[key] is not None:
                merged[key] = self[key]
        if self["master"]:
            merged["master"] = self["master"]
        if self["tag"]:
            merged["tag"] = self["tag"]
        masters = merged.get("master") or []
        if isinstance(masters, str):
            masters = [masters]
        if not masters:
            raise ValueError("--master: at least one master URL is needed")
        stateDir = Path(merged.get("state-dir") or defaultStateDir())
        token = merged.get("token") or os.environ.get(TOKEN_ENV)
        try:
            credential = readCredential(stateDir)
        except OSError as e:
            raise ValueError(f"--state-dir: cannot read its credential: {e}") from None
        if not token and credential is None:
            # Once enrolled, the credential in the state directory is enough.
            raise ValueError(f"--token: needed to enroll (or ${TOKEN_ENV})")
        try:
            maxTasks = int(merged.get("max-tasks", 1))
        except (TypeError, ValueError):
            raise ValueError("--max-tasks: must be an integer") from None
        if maxTasks < 1:
            raise ValueError("--max-tasks: must be at least 1")
        gpus = merged.get("gpus")
        if gpus is not None:
            try:
                gpus = int(gpus)
            except (TypeError, ValueError):
                raise ValueError("--gpus: must be an integer") from None
            if gpus < 0:
                raise ValueError("--gpus: must be 0 or more")
        tags = merged.get("tag") or []
        if isinstance(tags, str):
            tags = [tags]
        return {
            "masters": tuple(str(m) for m in masters),
            "token": str(token) if token else None,
            "state_dir": stateDir,
            "max_tasks": maxTasks,
            "tags": tuple(str(t) for t in tags),
            "hostname": str(merged.get("hostname") or socket.gethostname()),
            "gpus": gpus,
            **self._openjd(merged),
            **self._capabilities(merged),
        }

    def _capabilities(self, merged: dict[str, Any]) -> dict[str, Any]:
        for key in ("cpus", "ram-mb"):
            if self[key] is not None:
                merged[key] = self[key]
        return capabilities(merged, self["attribute"], self["amount"])

    def _openjd(self, merged: dict[str, Any]) -> dict[str, Any]:
        """
        The OpenJD options: C{path-mapping} (a list of OpenJD path mapping
        rules) and C{openjd-linger-s}.
        """
        try:
            rules = pathMappingRules(merged.get("path-mapping"))
        except ValueError as e:
            raise ValueError(f"path-mapping{e if str(e).startswith('[') else f': {e}'}") from None
        linger = self["openjd-linger-s"]
        if linger is None:
            linger = merged.get("openjd-linger-s", DEFAULT_LINGER_S)
        try:
            linger = float(linger)
        except (TypeError, ValueError):
            raise ValueError("--openjd-linger-s: must be a number of seconds") from None
        if not 0 <= linger < 86400:
            raise ValueError("--openjd-linger-s: must be 0 or more, under a day")
        return {"path_mapping": rules, "openjd_linger_s": linger}


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    s = options["settings"]
    try:
        lock = lockStateDir(s["state_dir"])
    except StateDirectoryBusy as e:
        sys.stderr.write(f"masterd-agent: {e}\n")
        raise SystemExit(1) from None
    # Found once: nvidia-smi is too slow to run at every hello.
    devices = offeredDevices(s["gpus"])
    settings = AgentSettings(
        agent_id=agentID(s["state_dir"]),
        token=s["token"],
        masters=s["masters"],
        hostname=s["hostname"],
        max_tasks=s["max_tasks"],
        tags=s["tags"],
        gpus=len(devices),
        gpu_devices=tuple(devices),
        version=__version__,
        state_dir=s["state_dir"],
        cpus=s["cpus"],
        ram_mb=s["ram_mb"],
        attributes=s["attributes"],
        amounts=s["amounts"],
    )
    holder: dict[str, AgentService] = {}
    runner = Runner(
        reactor, s["state_dir"], lambda message: holder["service"].send(message), gpus=len(devices),
        pathMapping=s["path_mapping"], openjdLinger=s["openjd_linger_s"],
    )  # fmt: skip
    service = AgentService(reactor, settings, runner)
    holder["service"] = service
    # Held, and so locked, for as long as the process lives.
    service.stateLock = lock
    return service
