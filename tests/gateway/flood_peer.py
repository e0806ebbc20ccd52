"""A FreeSWITCH stand-in that floods one outbound socket with events, in its own process.

    python -m tests.gateway.flood_peer HOST PORT UUID [--seconds S] [--max-bytes N]

It answers the gateway's set-up (connect, myevents, linger) like FreeSWITCH,
prints ``ready``, then writes events about its own channel as fast as the
socket takes them, until S seconds or N bytes have gone, the gateway closes
the socket, or it is killed. A process of its own, so that it keeps the
gateway's receive buffer full whatever the test's event loop is doing.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import uuid as uuid_module

from callcontrol.esl.frames import (
    CommandParser,
    encode_connect_reply,
    encode_event_plain,
    encode_reply,
)
from callcontrol.simulator.channel import SwitchIdentity, sip_channel

SET_UP_REPLIES = {
    "myevents": encode_reply("+OK Events Enabled"),
    "linger": encode_reply("+OK will linger"),
}


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("host")
    args.add_argument("port", type=int)
    args.add_argument("uuid")
    args.add_argument("--seconds", type=float, default=20.0)
    args.add_argument("--max-bytes", type=int, default=500_000_000)
    opts = args.parse_args()

    identity = SwitchIdentity(core_uuid=str(uuid_module.uuid4()))
    now = time.time()
    channel = sip_channel(
        uuid=opts.uuid,
        session_id=1,
        caller_number="1000",
        caller_name="1000",
        destination_number="8084",
        app_id="demo-app",
        socket_address=(opts.host, opts.port),
        now=now,
    )
    sock = socket.create_connection((opts.host, opts.port))
    parser = CommandParser()
    for expected in ("connect", "myevents", "linger"):
        while (command := parser.next_command()) is None:
            data = sock.recv(65536)
            if not data:
                sys.exit("the gateway closed the socket during set-up")
            parser.feed(data)
        assert command.line == expected, command.line
        if expected == "connect":
            sock.sendall(encode_connect_reply(channel.channel_data(identity, 1, now=now)))
        else:
            sock.sendall(SET_UP_REPLIES[expected])

    # Events the gateway reads and ignores: executions of an application it never started.
    block = b"".join(
        encode_event_plain(
            channel.event_headers(
                identity,
                seq,
                "CHANNEL_EXECUTE_COMPLETE",
                now=now,
                extra=(("Application", "playback"), ("Application-UUID", str(uuid_module.uuid4()))),
            )
        )
        for seq in range(2, 402)
    )
    print("ready", flush=True)
    # send() with a timeout rather than sendall(): a gateway that stops reading must not keep
    # this process past its deadline, and a partial write must not cut a frame in two.
    sock.settimeout(0.5)
    view, offset = memoryview(block), 0
    sent, deadline = 0, time.monotonic() + opts.seconds
    try:
        while sent < opts.max_bytes and time.monotonic() < deadline:
            try:
                written = sock.send(view[offset:])
            except TimeoutError:
                continue
            sent += written
            offset = (offset + written) % len(block)
    except OSError:
        pass  # the gateway closed the socket
    print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    main()
