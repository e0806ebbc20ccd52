"""A hand-driven FreeSWITCH side of one outbound Event Socket, for hostile and odd peers.

The simulator plays a well-behaved switch; this peer says exactly what a test
tells it to, on a real TCP connection to the gateway's outbound listener: a
second socket claiming a live call's Unique-ID, a flood, a frame that never
ends, silence. Frames are built with the same encoders the simulator uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid as uuid_module
from collections.abc import Sequence

from callcontrol.config import Address
from callcontrol.esl.frames import (
    Command,
    CommandParser,
    encode_connect_reply,
    encode_disconnect_notice,
    encode_event_plain,
    encode_reply,
)
from callcontrol.simulator.channel import Channel, SwitchIdentity, sip_channel

_SEQUENCE = itertools.count(1)


class RawPeer:
    """One TCP connection to the gateway's outbound listener, driven step by step."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gateway: Address, uuid: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = CommandParser()
        self._identity = SwitchIdentity(core_uuid=str(uuid_module.uuid4()))
        self.uuid = uuid
        self.channel: Channel = sip_channel(
            uuid=uuid,
            session_id=next(_SEQUENCE),
            caller_number="1000",
            caller_name="1000",
            destination_number="8084",
            app_id="demo-app",
            socket_address=(gateway.host, gateway.port),
            now=time.time(),
        )

    @classmethod
    async def open(
        cls, gateway: Address, *, uuid: str | None = None, source_host: str | None = None
    ) -> RawPeer:
        """Connect (from ``source_host`` when given: any 127.x address is this machine)."""
        local = (source_host, 0) if source_host is not None else None
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port, local_addr=local)
        return cls(reader, writer, gateway, str(uuid_module.uuid4()) if uuid is None else uuid)

    # -- reading ---------------------------------------------------------------------------------

    async def command(self, timeout: float = 5.0) -> Command:  # noqa: ASYNC109 - per-call deadline
        """The next command the gateway sends; EOFError if it closed the socket instead."""

        async def read() -> Command:
            while (command := self._parser.next_command()) is None:
                data = await self._reader.read(65536)
                if not data:
                    raise EOFError("the gateway closed the socket")
                self._parser.feed(data)
            return command

        return await asyncio.wait_for(read(), timeout)

    async def expect(self, line: str, timeout: float = 5.0) -> Command:  # noqa: ASYNC109
        command = await self.command(timeout)
        assert command.line == line, f"expected {line!r} from the gateway, got {command.line!r}"
        return command

    async def wait_closed_by_gateway(self, timeout: float = 5.0) -> bytes:  # noqa: ASYNC109
        """Everything the gateway still sends, until it closes the socket (EOF or reset); then ours."""

        async def read() -> bytes:
            received = bytearray()
            with contextlib.suppress(ConnectionResetError):
                while data := await self._reader.read(65536):
                    received += data
            return bytes(received)

        try:
            return await asyncio.wait_for(read(), timeout)
        finally:
            self.abort()

    # -- writing ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def event(
        self,
        name: str,
        *,
        leading: Sequence[tuple[str, str]] = (),
        extra: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A ``text/event-plain`` frame about this peer's channel."""
        headers = self.channel.event_headers(
            self._identity, next(_SEQUENCE), name, now=time.time(), leading=leading, extra=extra
        )
        return encode_event_plain(headers)

    def linger_notice(self) -> bytes:
        return encode_disconnect_notice(self.uuid, "linger", None, channel_name=self.channel.name)

    def connect_reply(self, app_id: str = "demo-app") -> bytes:
        """FreeSWITCH's reply to ``connect``: the channel's data, routed to ``app_id``."""
        self.channel.set_variable("call_control_app_id", app_id)
        return encode_connect_reply(
            self.channel.channel_data(self._identity, next(_SEQUENCE), now=time.time())
        )

    async def set_up(self, app_id: str = "demo-app") -> None:
        """Answer ``connect``, ``myevents`` and ``linger`` as FreeSWITCH does."""
        await self.expect("connect")
        self.send(self.connect_reply(app_id))
        await self.expect("myevents")
        self.send(encode_reply("+OK Events Enabled"))
        await self.expect("linger")
        self.send(encode_reply("+OK will linger"))
        await self.drain()

    async def finish(self) -> None:
        """Close our side and wait until the gateway has closed its side too."""
        self._writer.write_eof()
        await self.wait_closed_by_gateway()

    def abort(self) -> None:
        self._writer.transport.abort()
