"""
The twistd plugin of the reference agent: C{twistd -n masterd-agent}.
"""

from twisted.application.service import ServiceMaker

masterdAgent = ServiceMaker(
    "masterd agent",
    "masterd.agent.tap",
    "The reference render agent of masterd.",
    "masterd-agent",
)
