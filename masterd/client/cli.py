"""
masterctl under its old name, for C{python -m masterd.client.cli} and the
C{masterd.client.cli:main} entry point: imported, this module is
C{masterd_client.cli} itself (it puts that module in its place).
"""

import sys

import masterd_client.cli
from masterd_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
else:
    sys.modules[__name__] = masterd_client.cli
