"""The simulated FreeSWITCH: places calls into the gateway's outbound ESL listener.

Each call opens its own TCP connection to the gateway, as FreeSWITCH's ``socket``
application does (one connection per call), so hundreds of calls at once are
hundreds of independent sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid as uuid_module
from collections.abc import Collection, Mapping, Sequence

from callcontrol.simulator.call import TEARDOWN_DELAY, HangupOrder, SimulatedCall
from callcontrol.simulator.channel import SwitchIdentity

log = logging.getLogger(__name__)


class FreeSwitchSimulator:
    """A stand-in for FreeSWITCH that speaks the real outbound Event Socket protocol over TCP."""

    def __init__(
        self,
        gateway_host: str,
        gateway_port: int,
        *,
        hostname: str = "freeswitch-sim",
        dialplan_playback: float = 2.0,
    ) -> None:
        self.gateway = (gateway_host, gateway_port)
        self.identity = SwitchIdentity(core_uuid=str(uuid_module.uuid4()), hostname=hostname)
        #: How long the dialplan's ``playback`` after ``socket`` lasts before its ``hangup``.
        self.dialplan_playback = dialplan_playback
        self.calls: dict[str, SimulatedCall] = {}
        self._sequence = itertools.count(1)
        self._session_ids = itertools.count(1)
        self._shut_down = False
        self._closed = False

    # -- what calls need (SwitchContext) ---------------------------------------------------------

    def next_sequence(self) -> int:
        """Event-Sequence: one counter for the whole switch, as in FreeSWITCH."""
        return next(self._sequence)

    def session_id(self) -> int:
        return next(self._session_ids)

    def find_call(self, uuid: str) -> SimulatedCall | None:
        return self.calls.get(uuid)

    # -- public API ------------------------------------------------------------------------------

    async def place_call(
        self,
        *,
        app_id: str | None = "demo-app",
        caller_number: str = "1000",
        destination_number: str = "8084",
        answer_delay: float = 0.02,
        answer_completes: bool = True,
        error_replies: Mapping[str, str] | None = None,
        unanswered: Collection[str] = (),
        uuid: str | None = None,
        caller_name: str | None = None,
        hangup_order: HangupOrder | None = None,
        teardown_delay: float = TEARDOWN_DELAY,
        next_sockets: Sequence[tuple[str, int]] = (),
        gateway: tuple[str, int] | None = None,
    ) -> SimulatedCall:
        """A new inbound call whose dialplan runs ``socket <gateway> async full``.

        Returns once the TCP connection is up (or failed: then, like FreeSWITCH, the
        call goes on in its dialplan and ``socket_error`` says why). ``hangup_order``
        and ``teardown_delay``: what the socket gets after CHANNEL_HANGUP
        (``callcontrol.simulator.call.HANGUP_ORDERS``). ``next_sockets``: the
        dialplan's further ``socket`` actions, tried in order whenever a socket
        ends while the call is alive (the cluster's dialplan, DESIGN.md); ``gateway``:
        where the first ``socket`` goes, if not the simulator's gateway.
        """
        if self._shut_down or self._closed:
            raise RuntimeError("the simulated switch is shut down")
        call = SimulatedCall(
            self,
            gateway or self.gateway,
            uuid=uuid,
            app_id=app_id,
            caller_number=caller_number,
            caller_name=caller_name,
            destination_number=destination_number,
            answer_delay=answer_delay,
            answer_completes=answer_completes,
            error_replies=error_replies,
            unanswered=unanswered,
            hangup_order=hangup_order,
            teardown_delay=teardown_delay,
            next_sockets=next_sockets,
        )
        if call.uuid in self.calls:
            raise ValueError(f"a call with uuid {call.uuid} exists")
        self.calls[call.uuid] = call
        await call.start()
        return call

    async def shutdown_switch(self, grace: float = 0.0) -> None:
        """Like ``fsctl shutdown``: live calls hang up SYSTEM_SHUTDOWN, then every socket is told and closed.

        FreeSWITCH waits about 10 s between the two steps; ``grace`` is that wait.
        """
        self._shut_down = True
        calls = list(self.calls.values())
        log.info("shutting down with %d call(s)", len(calls))
        for call in calls:
            call.shutdown_hangup()
        if grace > 0:
            await asyncio.sleep(grace)
        for call in calls:
            call.shutdown_close()

    async def close(self) -> None:
        """Stop everything at once (sockets aborted, no notices). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(call.abort() for call in self.calls.values()))
