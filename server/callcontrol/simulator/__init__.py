"""A faithful FreeSWITCH outbound-socket peer for tests and the local demo.

It connects to the gateway's outbound ESL listener like ``socket <gw>:8084 async full``
does, answers ``connect``/``myevents``/``linger``/``getvar``/``sendmsg``/``api``/``exit``
with the bytes FreeSWITCH 1.10.12 sends, emits realistic event frames, and injects
faults (caller hangup, dropped socket, error replies, switch shutdown), and sends a
hangup in every order the real switch does (``HANGUP_ORDERS``).
"""

from callcontrol.causes import Q850_CAUSES
from callcontrol.simulator.call import HANGUP_ORDERS, TRANSITIONS, CallState, HangupOrder, SimulatedCall
from callcontrol.simulator.switch import FreeSwitchSimulator

__all__ = [
    "HANGUP_ORDERS",
    "Q850_CAUSES",
    "TRANSITIONS",
    "CallState",
    "FreeSwitchSimulator",
    "HangupOrder",
    "SimulatedCall",
]
