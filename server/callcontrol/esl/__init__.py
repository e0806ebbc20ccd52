"""FreeSWITCH Event Socket: the wire format (`callcontrol.esl.frames`).

Only the I/O-free frame layer is re-exported here, so importing it never pulls
in gevent; the outbound link lives in `callcontrol.esl.link`.
"""

from callcontrol.esl.frames import *  # noqa: F403 - the frame layer's public names
from callcontrol.esl.frames import __all__ as __all__
