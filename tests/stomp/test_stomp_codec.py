"""The STOMP codec fed bytes: every frame shape, every malformed case, every split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.stomp.codec import StompCodec, encode_frame
from protocols.stomp.frames import (
    NEED_DATA,
    Command,
    Event,
    Frame,
    Heartbeat,
    StompProtocolError,
    Version,
)


def decode_all(data: bytes, codec: StompCodec | None = None) -> list[Event]:
    codec = codec or StompCodec()
    codec.receive_data(data)
    out: list[Event] = []
    while (event := codec.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    return out


def error_of(data: bytes, codec: StompCodec | None = None) -> StompProtocolError:
    with pytest.raises(StompProtocolError) as info:
        decode_all(data, codec)
    return info.value


def v(version: Version, **limits: int) -> StompCodec:
    codec = StompCodec(**limits)
    codec.version = version
    return codec


# -- well-formed frames --------------------------------------------------------------------

def test_connect_frame() -> None:
    (frame,) = decode_all(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
    assert frame == Frame(Command.CONNECT, {"accept-version": "1.2", "host": "/"}, b"")


@pytest.mark.parametrize("command", ["STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK",
                                     "NACK", "BEGIN", "COMMIT", "ABORT", "DISCONNECT"])
def test_every_client_command(command: str) -> None:
    (frame,) = decode_all(command.encode() + b"\na:b\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.command is Command(command)
    assert frame.headers == {"a": "b"}


def test_body_without_content_length_ends_at_nul() -> None:
    (frame,) = decode_all(b"SEND\ndestination:/queue/a\n\nhello world\x00")
    assert isinstance(frame, Frame) and frame.body == b"hello world"


def test_content_length_body_may_hold_nul_bytes() -> None:
    body = b"\x00bin\x00ary\x00"
    (frame,) = decode_all(b"SEND\ncontent-length:%d\n\n" % len(body) + body + b"\x00")
    assert isinstance(frame, Frame) and frame.body == body


def test_heartbeats_between_frames_lf_and_crlf() -> None:
    events = decode_all(b"\n\r\nSEND\n\n\x00\n\nBEGIN\ntransaction:t\n\n\x00\r\n")
    assert events == [Heartbeat(), Heartbeat(), Frame(Command.SEND, {}, b""), Heartbeat(),
                      Heartbeat(), Frame(Command.BEGIN, {"transaction": "t"}, b""),
                      Heartbeat()]


def test_crlf_line_endings_stomp_1_2() -> None:
    (frame,) = decode_all(b"SEND\r\ndestination:/queue/a\r\nx:y\r\n\r\nbody\x00",
                          v(Version.V1_2))
    assert frame == Frame(Command.SEND, {"destination": "/queue/a", "x": "y"}, b"body")


@pytest.mark.parametrize("cut", [None, 5, 9, 10, 11, 12])
def test_crlf_blank_line_then_a_body_starting_with_lf(cut: int | None) -> None:
    data = b"SEND\nk:v\r\n\r\n\nbody\x00"
    codec = v(Version.V1_2)
    events = decode_all(data if cut is None else data[:cut], codec)
    if cut is not None:
        events += decode_all(data[cut:], codec)
    assert events == [Frame(Command.SEND, {"k": "v"}, b"\nbody")]


def test_repeated_header_first_wins() -> None:
    (frame,) = decode_all(b"SEND\nfoo:World\nfoo:Hello\n\n\x00")
    assert isinstance(frame, Frame) and frame.headers == {"foo": "World"}


def test_header_value_may_be_empty_and_hold_colons_in_1_0() -> None:
    (frame,) = decode_all(b"SEND\na:\nb:c:d\n\n\x00", v(Version.V1_0))
    assert isinstance(frame, Frame) and frame.headers == {"a": "", "b": "c:d"}


def test_utf8_headers() -> None:
    (frame,) = decode_all("SEND\nnom:марко\n\n\x00".encode(), v(Version.V1_2))
    assert isinstance(frame, Frame) and frame.headers == {"nom": "марко"}


# -- escaping ------------------------------------------------------------------------------

def test_escapes_1_2() -> None:
    raw = b"SEND\nk\\cey:a\\nb\\cc\\\\d\\re\n\n\x00"
    (frame,) = decode_all(raw, v(Version.V1_2))
    assert isinstance(frame, Frame) and frame.headers == {"k:ey": "a\nb:c\\d\re"}


def test_escapes_1_1_have_no_cr() -> None:
    (frame,) = decode_all(b"SEND\nk:a\\nb\\cc\\\\d\n\n\x00", v(Version.V1_1))
    assert isinstance(frame, Frame) and frame.headers == {"k": "a\nb:c\\d"}
    err = error_of(b"SEND\nk:a\\rb\n\n\x00", v(Version.V1_1))
    assert err.message == "Bad header" and "\\r" in err.detail


def test_no_unescaping_in_1_0() -> None:
    (frame,) = decode_all(b"SEND\nk:a\\nb\\t\n\n\x00", v(Version.V1_0))
    assert isinstance(frame, Frame) and frame.headers == {"k": "a\\nb\\t"}


def test_connect_headers_are_never_unescaped() -> None:
    (frame,) = decode_all(b"CONNECT\npasscode:a\\cb\\t\n\n\x00", v(Version.V1_2))
    assert isinstance(frame, Frame) and frame.headers == {"passcode": "a\\cb\\t"}


@pytest.mark.parametrize("raw", [b"k:a\\tb", b"k:a\\", b"k\\x:v"])
def test_undefined_escape_is_fatal(raw: bytes) -> None:
    err = error_of(b"SEND\n" + raw + b"\n\n\x00", v(Version.V1_2))
    assert err.message == "Bad header"


def test_encode_escapes_per_version() -> None:
    headers = [("a:b", "x\ny:z\\w\rq")]
    assert encode_frame(Command.RECEIPT, headers, b"", Version.V1_2) == (
        b"RECEIPT\na\\cb:x\\ny\\cz\\\\w\\rq\n\n\x00")
    assert encode_frame(Command.RECEIPT, headers, b"", Version.V1_1) == (
        b"RECEIPT\na\\cb:x\\ny\\cz\\\\w q\n\n\x00")
    assert encode_frame(Command.RECEIPT, headers, b"", Version.V1_0) == (
        b"RECEIPT\na:b:x y:z\\w q\n\n\x00")
    # CONNECTED is never escaped
    assert encode_frame(Command.CONNECTED, [("server", "a:b")], b"", Version.V1_2) == (
        b"CONNECTED\nserver:a:b\n\n\x00")


def test_encode_adds_content_length_to_bodies() -> None:
    data = encode_frame(Command.MESSAGE, [("destination", "/queue/a")], b"a\x00b",
                        Version.V1_2)
    assert data == b"MESSAGE\ndestination:/queue/a\ncontent-length:3\n\na\x00b\x00"


header_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(st.tuples(header_text.filter(lambda k: k not in ("", "content-length")),
                          header_text), max_size=6),
       st.binary(max_size=64), st.sampled_from([Version.V1_1, Version.V1_2]))
@settings(max_examples=100, deadline=None)
def test_encode_decode_round_trip(headers: list[tuple[str, str]], body: bytes,
                                  version: Version) -> None:
    codec = StompCodec(accept=frozenset(Command))
    codec.version = version
    data = encode_frame(Command.SEND, headers, body, version)
    (frame,) = decode_all(data, codec)
    assert isinstance(frame, Frame)
    expected: dict[str, str] = {}
    for k, val in headers:
        if version is Version.V1_1:  # 1.1 cannot carry a CR: it is written as a space
            k, val = k.replace("\r", " "), val.replace("\r", " ")
        expected.setdefault(k, val)
    expected.setdefault("content-length", str(len(body)))
    assert dict(frame.headers) == expected and frame.body == body


# -- malformed input -----------------------------------------------------------------------

def test_unknown_command() -> None:
    err = error_of(b"HELLO\n\n\x00")
    assert err.message == "Unknown command" and "HELLO" in err.detail


def test_server_command_from_a_client_is_unknown() -> None:
    assert error_of(b"MESSAGE\n\n\x00").message == "Unknown command"


def test_lowercase_command_is_unknown() -> None:
    assert error_of(b"send\n\n\x00").message == "Unknown command"


def test_endless_command_line_refused_early() -> None:
    codec = StompCodec()
    codec.receive_data(b"X" * 40)
    with pytest.raises(StompProtocolError) as info:
        codec.next_event()
    assert info.value.message == "Unknown command"


def test_header_without_colon() -> None:
    assert error_of(b"SEND\nnocolon\n\n\x00").message == "Malformed frame"


def test_header_with_empty_name() -> None:
    assert error_of(b"SEND\n:value\n\n\x00").message == "Malformed frame"


@pytest.mark.parametrize("raw", [b"SEND\n\xffname:v\n\n\x00", b"SEND\nname:\xc3\x28\n\n\x00",
                                 b"SEND\nname:\xed\xa0\x80\n\n\x00"])
def test_bad_utf8_in_headers(raw: bytes) -> None:
    err = error_of(raw, v(Version.V1_2))
    assert err.message == "Bad header" and "UTF-8" in err.detail


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1.5", b"", b"\xd9\xa3"])
def test_invalid_content_length(value: bytes) -> None:
    err = error_of(b"SEND\ncontent-length:" + value + b"\n\nx\x00")
    assert err.message in ("Invalid content-length", "Bad header")


def test_body_not_followed_by_nul() -> None:
    err = error_of(b"SEND\ncontent-length:2\n\nabc\x00")
    assert err.message == "Malformed frame"


def test_content_length_over_limit_refused_before_the_body() -> None:
    codec = StompCodec(max_frame_size=1024)
    codec.receive_data(b"SEND\ncontent-length:5000\n\n")  # no body sent at all
    with pytest.raises(StompProtocolError) as info:
        codec.next_event()
    assert info.value.message == "Frame too large"


def test_body_without_length_over_limit_refused_before_its_nul() -> None:
    codec = StompCodec(max_frame_size=1024)
    codec.receive_data(b"SEND\n\n")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"x" * 1000)
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"x" * 100)
    with pytest.raises(StompProtocolError) as info:
        codec.next_event()
    assert info.value.message == "Frame too large"


def test_too_many_headers_refused_before_the_frame_ends() -> None:
    codec = StompCodec(max_headers=3)
    codec.receive_data(b"SEND\na:1\nb:2\nc:3\nd:4\n")
    with pytest.raises(StompProtocolError) as info:
        codec.next_event()
    assert info.value.message == "Too many headers"


def test_header_too_long_refused_before_its_end() -> None:
    codec = StompCodec(max_header_length=100)
    codec.receive_data(b"SEND\nk:" + b"v" * 200)
    with pytest.raises(StompProtocolError) as info:
        codec.next_event()
    assert info.value.message == "Header too long"


def test_headers_over_frame_limit() -> None:
    codec = StompCodec(max_frame_size=1024, max_header_length=900)
    codec.receive_data(b"SEND\n" + b"".join(b"k%d:%s\n" % (i, b"v" * 500) for i in range(3)))
    with pytest.raises(StompProtocolError) as info:
        codec.next_event()
    assert info.value.message == "Frame too large"


def test_codec_stays_broken_after_an_error() -> None:
    codec = StompCodec()
    codec.receive_data(b"BOGUS\n\n\x00")
    with pytest.raises(StompProtocolError):
        codec.next_event()
    codec.receive_data(b"SEND\n\n\x00")
    with pytest.raises(StompProtocolError):
        codec.next_event()


def test_frame_at_the_limit_is_accepted() -> None:
    head = b"SEND\ncontent-length:10\n\n"
    codec = StompCodec(max_frame_size=len(head) + 10)
    (frame,) = decode_all(head + b"0123456789\x00", codec)
    assert isinstance(frame, Frame) and frame.body == b"0123456789"


# -- splitting -----------------------------------------------------------------------------

STREAM = (
    b"CONNECT\r\naccept-version:1.2\r\nhost:/\r\n\r\n\x00\n"
    b"SEND\ndestination:/queue/a\nk:a\\cb\ncontent-length:5\n\n\x00\x01\x02\x03\x00\x00"
    b"\r\n\n"
    b"SEND\ndestination:/queue/b\n\nplain text\x00"
    b"ACK\nid:x\n\n\x00"
)


def _expected() -> list[Event]:
    codec = StompCodec()
    codec.version = Version.V1_2
    return decode_all(STREAM, codec)


def test_split_at_every_offset() -> None:
    expected = _expected()
    assert len([e for e in expected if isinstance(e, Frame)]) == 4
    for cut in range(len(STREAM) + 1):
        codec = StompCodec()
        codec.version = Version.V1_2
        got = decode_all(STREAM[:cut], codec)
        got += decode_all(STREAM[cut:], codec)
        assert got == expected, cut


def test_byte_by_byte() -> None:
    codec = StompCodec()
    codec.version = Version.V1_2
    got: list[Event] = []
    for i in range(len(STREAM)):
        got += decode_all(STREAM[i:i + 1], codec)
    assert got == _expected()


# -- fuzz ----------------------------------------------------------------------------------

@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"SEND\n", b"content-length:3\n", b"\n", b"\x00", b"a:b\\c\n", b"\r\n", b"CONNECT\n",
     b"content-length:99999999\n", b"\xff", b"k:\\r\n"])), max_size=12),
    st.sampled_from([None, Version.V1_0, Version.V1_1, Version.V1_2]))
@settings(max_examples=200, deadline=None)
def test_fuzz_only_protocol_errors_escape(chunks: list[bytes], version: Version | None
                                          ) -> None:
    codec = StompCodec(max_frame_size=2048, max_headers=5, max_header_length=64)
    codec.version = version
    try:
        for chunk in chunks:
            codec.receive_data(chunk)
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    break
                assert isinstance(event, Frame | Heartbeat)
    except StompProtocolError as exc:
        assert exc.message and exc.detail
    assert codec.buffered <= 2048 + 64 * 6 + 400
