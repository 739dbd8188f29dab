"""``parse_lines`` reads back exactly what the encoder writes, escapes included, and names the
line of a malformed body."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mos_agent.lineprotocol import LineProtocolError, escape_string_field, parse_lines, series_prefix

# any printable text plus the characters line protocol escapes
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(measurement=text.filter(lambda m: not m.startswith("#")),  # a leading '#' makes a comment line
       tags=st.dictionaries(text, text, max_size=4), value=text,
       number=st.floats(allow_nan=False, allow_infinity=False), code=st.integers(-2**63, 2**63 - 1),
       ts=st.integers(0, 2**62))
def test_encoder_output_parses_back_to_the_same_values(measurement: str, tags: dict[str, str], value: str,
                                                       number: float, code: int, ts: int) -> None:
    prefix = series_prefix(measurement, sorted(tags.items()))
    body = (f'{prefix}text="{escape_string_field(value)}",quality_code={code}i {ts}\n'
            f"{prefix}value={number!r},quality_code={code}i {ts + 1}\n").encode()
    first, second = list(parse_lines(body))
    assert first == (measurement, tags, {"text": value, "quality_code": code}, ts)
    assert second == (measurement, tags, {"value": number, "quality_code": code}, ts + 1)


def test_field_types_comments_and_missing_timestamp() -> None:
    body = (b"# a comment\n\n"
            b"m,a=1 f=1.5,i=-3i,u=7u,b=t,B=FALSE,s=\"x y\" 42\r\n"
            b"m v=1e3\n")
    assert list(parse_lines(body)) == [
        ("m", {"a": "1"}, {"f": 1.5, "i": -3, "u": 7, "b": True, "B": False, "s": "x y"}, 42),
        ("m", {}, {"v": 1000.0}, None),
    ]


def test_escaped_separators_in_names() -> None:
    body = b'my\\ meas\\,ure,k\\=ey=v\\ a\\,l\\=ue fi\\ eld="quote \\" and \\\\ backslash" 1\n'
    assert list(parse_lines(body)) == [
        ("my meas,ure", {"k=ey": "v a,l=ue"}, {"fi eld": 'quote " and \\ backslash'}, 1)]


@pytest.mark.parametrize("line", [
    "m",  # no fields
    "m v=",  # empty value
    "m,t v=1",  # tag without value
    'm v="open',  # unterminated string
    "m v=1 notatime",
    "m v=nan",
    ",t=1 v=1",  # no measurement
])
def test_malformed_lines_name_their_line_number(line: str) -> None:
    body = f"m v=1 1\n{line}\n".encode()
    with pytest.raises(LineProtocolError, match="line 2"):
        list(parse_lines(body))
