"""STOMP fuzzed through the real session, in 1.0, 1.1 and 1.2: random bytes before and
after CONNECT, frames of real commands with random, escaped, repeated, NUL-carrying,
overlong and odd header lines, and byte edits of a valid conversation. Codec-only fuzzing
is in tests/stomp/test_stomp_codec.py; the oracle is fuzz/oracles.py."""

from __future__ import annotations

from fuzz_profile import EDIT, fuzz, mutate
from hypothesis import given
from hypothesis import strategies as st
from oracles import STOMP_LIMITS, check_stomp, run_stomp, stomp_connect
from seeds import stomp_frames

from protocols.stomp.codec import encode_frame
from protocols.stomp.frames import Command

VERSIONS = st.sampled_from(["1.0", "1.1", "1.2"])
LONG = STOMP_LIMITS["max_header_length"]
NAMES = st.sampled_from(["destination", "id", "ack", "receipt", "transaction", "subscription",
                         "message-id", "content-length", "content-type", "persistent",
                         "reply-to", "prefetch-count", "x-queue-name", "durable",
                         "auto-delete", "heart-beat", "accept-version", "host", "login",
                         "passcode", "requeue", "expires", "priority", "x-max-length"])
VALUES = st.sampled_from(["/queue/q", "/topic/a.b", "/exchange/amq.topic/k", "/amq/queue/q",
                          "/temp-queue/t", "/queue/", "/exchange/", "client",
                          "client-individual", "auto", "true", "false", "0", "-1", "99999999",
                          "1,1", "x", ""]) | st.text(max_size=8)
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"])


@st.composite
def header_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # an odd line: no colon, only a colon, escapes, NUL, CR, non-UTF-8
        return draw(st.sampled_from([b"novalue", b":", b"::", b"a:b:c", b"k\\x:v", b"k:\\",
                                     b"k\x00:v", b"k:v\x00", b"k:\r", b"\xff:\xfe",
                                     b"\\c:\\n\\r\\\\", b" destination : /queue/q "]))
    if kind == 1:  # around the length limit
        return b"k:" + b"v" * draw(st.integers(LONG - 4, LONG + 4))
    if kind == 2:
        return draw(st.binary(max_size=30)).replace(b"\n", b"")
    name = draw(NAMES)
    return f"{name}:{draw(VALUES)}".encode().replace(b"\n", b"\\n")


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    command = draw(st.sampled_from([c.value for c in Command]) | st.sampled_from(
        ["send", "SEND ", "", "\x00", "CONNECT\r"]))
    lines = draw(st.lists(header_line(), max_size=5))
    if lines and draw(st.integers(0, 7)) == 0:  # past the header count limit
        lines = lines * (STOMP_LIMITS["max_headers"] // len(lines) + 1)
    end = draw(LINE_ENDS)
    body = draw(st.binary(max_size=60))
    tail = draw(st.sampled_from([b"\x00", b"\x00\n", b"\x00\r\n", b"", b"\x00\x00"]))
    return command.encode() + end + b"".join(line + end for line in lines) + end + body + tail


@fuzz(300)
@given(st.binary(max_size=500), st.sampled_from([None, 1, 3]))
def test_random_bytes_before_connect(data: bytes, chunk: int | None) -> None:
    run_stomp(data, chunk)


@fuzz(300)
@given(VERSIONS, st.binary(max_size=500), st.sampled_from([None, 1, 3]))
def test_random_bytes_after_connect(version: str, data: bytes, chunk: int | None) -> None:
    run_stomp(stomp_connect(version) + data, chunk)


@fuzz(120)
@given(VERSIONS, st.lists(frame(), min_size=1, max_size=4), st.sampled_from([None, 2]))
def test_random_frames_with_odd_headers(version: str, frames: list[bytes],
                                        chunk: int | None) -> None:
    run_stomp(stomp_connect(version) + b"".join(frames), chunk)


@fuzz(100)
@given(st.lists(frame(), min_size=1, max_size=2))
def test_random_frames_as_the_first_frame(frames: list[bytes]) -> None:
    run_stomp(b"".join(frames))


@fuzz(200)
@given(VERSIONS, st.lists(EDIT, min_size=1, max_size=5))
def test_edits_of_a_valid_conversation(version: str, edits: list[tuple[str, int, int]]
                                       ) -> None:
    conversation = b"".join(encode_frame(c, h, b, None) for c, h, b in stomp_frames())
    run_stomp(stomp_connect(version) + mutate(conversation, edits))


@fuzz(200)
@given(st.binary(min_size=1, max_size=400))
def test_the_atheris_entry_reads_any_input(data: bytes) -> None:
    check_stomp(data)


# -- crashes found by fuzz/fuzz_stomp.py, as regression tests ----------------------------------

# STOMP 1.2: a SEND to /queue/q, two client-ack subscriptions to /queue/q (ids "D" and
# "\x03SUBSCRIBE"), then a bad command line (ERROR). Closing ended the subscriptions one by
# one, and the message "D" had not acked was requeued while the other was still consuming:
# a MESSAGE written after the ERROR.
CRASH_REQUEUE_TO_SIBLING = bytes.fromhex(
    "0353454e440a65657374696e6174696f6e3a2f71752f750000000000000000652f615c63624942450a646573"
    "74696e6174696f6e3a2f71756575652f710a69643a300a61636b3a636c69656e740a0a000a53554253435249"
    "42450a64737469656e6174696f6e3a2f746f7069632f612e320a69643a440a65657374696e6174696f6e3a2f"
    "71752f750000000000000000652f615c63624942450a64657374696e6174696f6e3a2f71756575652f710a69"
    "643a300a61636b3a636c69656e740a0a000a5355425343524942450a64737469656e6174696f6e3a2f746f70"
    "69632f612e320a69643a035355425343524942450a64657374696e6174696f6e3a2f71756575652f710a6964"
    "3a310a61636b3a636c69656e740a0a000a535542035355425343524942450a64657374696e6174696f6e3a2f"
    "71756575652f710a69643a310a61636b3a636c69656e740a0a000a5355425343524942450a64657374696e61"
    "7469000000000000000d")


def test_crash_nothing_is_written_after_the_error() -> None:
    check_stomp(CRASH_REQUEUE_TO_SIBLING)
    session = run_stomp(stomp_connect("1.2") + CRASH_REQUEUE_TO_SIBLING[1:])
    assert session.closed
    from oracles import AUTH, CONFIG, PEER, Clock, stomp_output

    from gateway.core.broker import Broker
    from gateway.store.base import MemoryStore
    from protocols.stomp.session import StompSession

    broker = Broker(MemoryStore(), CONFIG.auth.vhosts)
    session = StompSession(broker, AUTH, peer=PEER, loopback=True, clock=Clock(),
                           **STOMP_LIMITS)
    session.receive_data(stomp_connect("1.2") + CRASH_REQUEUE_TO_SIBLING[1:])
    frames = stomp_output(session.data_to_send())
    assert [f.command for f in frames] == [Command.CONNECTED, Command.MESSAGE, Command.ERROR]
    # the message is back on its queue, for the next consumer
    assert broker.vhost("/").queues["q"].message_count == 1
