"""A faithful FreeSWITCH outbound-socket peer for tests and the local demo.

It connects to the gateway's outbound ESL listener like ``socket <gw>:8084 async full``
does, answers ``connect``/``myevents``/``linger``/``getvar``/``sendmsg``/``api``/``exit``
with the bytes FreeSWITCH 1.10.12 sends, emits realistic event frames, and injects
faults (caller hangup, dropped socket, error replies, switch shutdown).
"""

from callcontrol.causes import Q850_CAUSES
from callcontrol.simulator.call import TRANSITIONS, CallState, SimulatedCall
from callcontrol.simulator.switch import FreeSwitchSimulator

__all__ = ["Q850_CAUSES", "TRANSITIONS", "CallState", "FreeSwitchSimulator", "SimulatedCall"]
