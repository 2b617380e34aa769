"""
C{python -m masterd_client ...} is C{masterctl ...}: for a DCC's Python
(C{hython -m masterd_client submit ...}) where no console script is on the
PATH.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
