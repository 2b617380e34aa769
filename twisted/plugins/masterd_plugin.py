"""
The twistd plugin: C{twistd -n masterd -c etc/master.yaml}.
"""

from twisted.application.service import ServiceMaker

masterd = ServiceMaker(
    "masterd",
    "masterd.tap",
    "The master daemon of a render farm.",
    "masterd",
)
