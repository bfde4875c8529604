"""Reading a receiver's ``Link`` header (routing/rewrite.py ``next_page``): RFC 8288 §3 link-values, of which the hub
relays the next page only (OCPI 2.2.1 transport_and_format, Pagination). End to end: tests/test_callbacks.py."""

from __future__ import annotations

import time

import pytest

from routing.rewrite import next_page


@pytest.mark.parametrize(("link", "page"), [
    ('<https://cpo/l?offset=2&limit=2>; rel="next"', "https://cpo/l?offset=2&limit=2"),
    ("<https://cpo/l?ids=a,b>;rel=next", "https://cpo/l?ids=a,b"),  # a comma inside <...> is the URL's
    ('<https://cpo/0>; rel="prev", <https://cpo/2>; rel="next", <https://cpo/9>; rel="last"', "https://cpo/2"),
    ('<https://cpo/0>; title="back, <https://cpo/x>; rel=next"; rel=prev, <https://cpo/2>; rel=next', "https://cpo/2"),
    ('<https://cpo/0>; REL="last Next"', "https://cpo/0"),  # several relation types, any case
    ('<https://cpo/0>; rel="prev"; rel="next", <https://cpo/2>; rel="next"', "https://cpo/2"),  # first rel counts
    ('<https://cpo/2>; rel="next", <https://cpo/3>; rel="next"', "https://cpo/2"),
    (' , <https://cpo/2> ;  rel = next ,, ', "https://cpo/2"),  # whitespace, empty list elements
    ('<https://cpo/2>; rel="next";', "https://cpo/2"),  # a stray ';'
    ("<https://cpo/2>", "https://cpo/2"),  # no rel (RFC 8288 requires one): OCPI defines no other relation
    ('<https://cpo/0>; rel="prev", <https://cpo/2>', "https://cpo/2"),
    ('<https://cpo/2>, <https://cpo/0>; rel="prev"', "https://cpo/2"),
    ('<https://cpo/0>; rel="prev", <https://cpo/1>; rel="first"', None),
    ("<https://cpo/0>; rel", None),
    ("", None),
])
def test_the_next_page_is_found_among_the_link_values(link: str, page: str | None) -> None:
    assert next_page(link) == page


@pytest.mark.parametrize("link", [
    'https://cpo/2; rel="next"',  # no <...>
    "<https://cpo/2> rel=next",  # no ';'
    '<https://cpo/2>; rel="next" x',
    '<https://cpo/0>; title="unterminated, <https://cpo/2>; rel=next',
])
def test_a_header_that_is_not_link_values_is_refused(link: str) -> None:
    with pytest.raises(ValueError):
        next_page(link)


@pytest.mark.parametrize("link", [
    "<a>" + "; ;" * 20_000 + '"', "<a>" + " ;\t" * 20_000 + '"', "<a>" + "; x = " * 10_000 + '"',
    '<a>; rel="' + "\\\\" * 30_000, "<a>," * 15_000 + '"', "<" * 60_000,
])
def test_a_hostile_header_is_read_in_linear_time(link: str) -> None:
    """A header section may be 64 KiB (routing/upstream.py): each of these backtracks for ever in a naive pattern.
    Not a speed figure: the linear reading takes milliseconds, and the bound only has to tell it from "for ever"
    on a busy host."""
    started = time.perf_counter()
    with pytest.raises(ValueError):
        next_page(link)
    assert time.perf_counter() - started < 5
