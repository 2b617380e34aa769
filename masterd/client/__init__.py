"""
The client library under its old name: C{masterd.client} is
C{masterd_client}, the C{masterd-client} distribution (client/ in this
repository; standard library only, Python 3.9 and newer), which masterd
depends on. Every module of it is here by its old name too, as the very same
module object (C{masterd.client.cli is masterd_client.cli}), so that
C{from masterd.client import Client}, C{masterd.client.cli:main} and
C{python -m masterd.client.cli} keep working. New code imports
C{masterd_client}. See docs/client.md.
"""

import importlib
import pkgutil
import sys

import masterd_client
from masterd_client import *  # noqa: F403
from masterd_client import __all__, __version__  # noqa: F401

for _module in pkgutil.iter_modules(masterd_client.__path__):
    # Not __main__ (it runs masterctl), nor cli: cli.py is here so that
    # python -m masterd.client.cli runs, and it is masterd_client.cli.
    if not _module.name.startswith("__") and _module.name != "cli":
        sys.modules[f"{__name__}.{_module.name}"] = globals()[_module.name] = (
            importlib.import_module(f"masterd_client.{_module.name}")
        )
del _module
