"""NIP-01 serialization and ids, the kind 38421 listing, discovery selection and relay backoff."""

import json
from dataclasses import replace

import pytest

from app.domain.errors import MalformedEventError
from app.domain.nostr import (
    ANNOUNCEMENT_KIND,
    MAX_CONTENT_CHARS,
    Event,
    EventQuery,
    Listing,
    ProviderAnnouncement,
    announcement_from_event,
    backoff_seconds,
    compute_event_id,
    default_provider_id,
    event_from_json,
    is_loopback_url,
    needs_publishing,
    newest,
    next_created_at,
    select_providers,
    serialize_event,
)

# A kind 1 event signed by `nak --sec 3 --ts 1700000000` (BIP-340 vector 0's key): an independent NIP-01 id.
GOLDEN_PUBKEY = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
GOLDEN_ID = "693fe0c19b0498f428adfe65182bfe135d34dd9efc39905887d5c5efa528d044"
GOLDEN_SIG = (
    "30a6bcca9a2f1342d47a9949317e22a0c34e01fd94d38b7bc34d93030e783941"
    "2592ff31cb1980e092ff7162e3f6d80a8d0ee25e586893fa99c8d33ee88b892b"
)
PK = "ab" * 32

LISTING = Listing.create(
    provider_id="node-1",
    endpoints=("https://node.example", "http://abc.onion"),
    mints=("https://mint.a", "https://mint.b"),
    version="0.1.0",
    name="Node",
    about="About it",
)

EVENT = Event(
    id="00" * 32,
    pubkey=PK,
    created_at=1_700_000_000,
    kind=ANNOUNCEMENT_KIND,
    tags=(("d", "node-1"), ("u", "https://node.example"), ("mint", "https://mint.a"), ("version", "0.1.0")),
    content='{"name":"Node","about":"About it"}',
    sig="11" * 64,
)

ANNOUNCEMENT = ProviderAnnouncement(
    event_id="00" * 32,
    pubkey=PK,
    provider_id="node-1",
    created_at=100,
    kind=ANNOUNCEMENT_KIND,
    name="Node",
    about=None,
    urls=("https://node.example",),
    mints=(),
    version=None,
    content="{}",
)


# -- NIP-01 ----------------------------------------------------------------------------------------------------------
def test_compute_event_id_matches_independently_signed_event() -> None:
    assert compute_event_id(GOLDEN_PUBKEY, 1_700_000_000, 1, (), "hello tclnostr") == GOLDEN_ID


def test_serialize_event_writes_canonical_array_without_whitespace() -> None:
    serialized = serialize_event(PK, 1, 38421, (("d", "x"), ("u", "https://a")), "hi")

    assert serialized == f'[0,"{PK}",1,38421,[["d","x"],["u","https://a"]],"hi"]'.encode()


def test_serialize_event_escapes_only_json_specials_and_keeps_unicode_verbatim() -> None:
    content = 'line\n"q"\\\t\r\b\f ü 😀'

    serialized = serialize_event(PK, 1, 1, (), content)

    assert serialized.endswith('"line\\n\\"q\\"\\\\\\t\\r\\b\\f ü 😀"]'.encode())


def test_event_id_is_valid_only_when_fields_hash_to_it() -> None:
    golden = Event(GOLDEN_ID, GOLDEN_PUBKEY, 1_700_000_000, 1, (), "hello tclnostr", GOLDEN_SIG)

    assert golden.id_is_valid
    assert not replace(golden, content="hello tclnostr!").id_is_valid


def test_event_from_json_round_trips_to_json() -> None:
    parsed = event_from_json(json.loads(json.dumps(EVENT.to_json())))

    assert parsed == EVENT


def _json_with(**overrides: object) -> dict[str, object]:
    data = EVENT.to_json()
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "event",
        {k: v for k, v in EVENT.to_json().items() if k != "sig"},
        _json_with(id="AB" * 32),
        _json_with(pubkey="ab" * 31),
        _json_with(sig="11" * 63),
        _json_with(created_at="1700000000"),
        _json_with(created_at=-1),
        _json_with(kind=True),
        _json_with(kind=70000),
        _json_with(content=None),
        _json_with(content="x" * (MAX_CONTENT_CHARS + 1)),
        _json_with(content="\ud800"),
        _json_with(tags={"d": "x"}),
        _json_with(tags=[[]]),
        _json_with(tags=[["d", 1]]),
        _json_with(tags=[["t", "x"]] * 101),
        _json_with(tags=[["t", "x" * 3000]]),
    ],
)
def test_event_from_json_raises_when_event_is_malformed_or_oversized(obj: object) -> None:
    with pytest.raises(MalformedEventError):
        event_from_json(obj)


def test_event_query_to_json_has_nip01_filter_keys() -> None:
    query = EventQuery(kinds=(ANNOUNCEMENT_KIND,), limit=10, authors=(PK,), d_tags=("node-1",))

    assert query.to_json() == {"kinds": [38421], "authors": [PK], "#d": ["node-1"], "limit": 10}


def test_event_query_to_json_omits_empty_filters() -> None:
    assert EventQuery(kinds=(ANNOUNCEMENT_KIND,), limit=500).to_json() == {"kinds": [38421], "limit": 500}


# -- listing ---------------------------------------------------------------------------------------------------------
def test_listing_tags_are_d_u_mint_version_in_order() -> None:
    assert LISTING.tags == (
        ("d", "node-1"),
        ("u", "https://node.example"),
        ("u", "http://abc.onion"),
        ("mint", "https://mint.a"),
        ("mint", "https://mint.b"),
        ("version", "0.1.0"),
    )


def test_listing_content_is_name_and_about_json() -> None:
    listing = replace(LISTING, name='Nöde "1"', about="")

    assert json.loads(listing.content) == {"name": 'Nöde "1"', "about": ""}


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://0.0.0.0", "http://app.localhost"],
)
def test_listing_excludes_loopback_endpoint(endpoint: str) -> None:
    listing = Listing.create(provider_id="d", endpoints=(endpoint, None), mints=(), version="v", name="n", about="a")

    assert listing.urls == ()
    assert not listing.publishable


def test_listing_keeps_public_endpoint_and_drops_unset_one() -> None:
    listing = Listing.create(
        provider_id="d", endpoints=(None, "https://node.example"), mints=(), version="v", name="n", about="a"
    )

    assert listing.urls == ("https://node.example",)
    assert listing.publishable


def test_listing_event_is_kind_38421_with_listing_tags_and_content() -> None:
    unsigned = LISTING.event(PK, 1_700_000_000)

    assert (unsigned.kind, unsigned.tags, unsigned.content) == (38421, LISTING.tags, LISTING.content)
    assert unsigned.id == compute_event_id(PK, 1_700_000_000, 38421, LISTING.tags, LISTING.content)


def test_listing_matches_event_only_when_tags_and_content_are_equal() -> None:
    signed = LISTING.event(PK, 5).signed("11" * 64)

    assert LISTING.matches(signed)
    assert not replace(LISTING, name="Other").matches(signed)
    assert not replace(LISTING, mints=("https://mint.a",)).matches(signed)


def test_default_provider_id_is_first_12_hex_chars_of_pubkey() -> None:
    assert default_provider_id("0123456789abcdef" * 4) == "0123456789ab"


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.5", True),
        ("http://LOCALHOST:1", True),
        ("http://[::1]", True),
        ("not a url", True),
        ("https://node.example", False),
        ("http://192.168.1.2", False),
        ("http://abc.onion", False),
    ],
)
def test_is_loopback_url_classifies_hosts(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


# -- publishing rules ------------------------------------------------------------------------------------------------
def test_needs_publishing_is_false_when_relay_copy_is_equal_and_younger_than_24h() -> None:
    current = LISTING.event(PK, 1_000).signed("11" * 64)

    assert not needs_publishing(LISTING, current, 1_000 + 24 * 3600 - 1)


@pytest.mark.parametrize(
    ("listing", "age"),
    [(LISTING, 24 * 3600), (replace(LISTING, about="changed"), 0)],
    ids=["stale", "changed"],
)
def test_needs_publishing_is_true_when_relay_copy_is_stale_or_different(listing: Listing, age: int) -> None:
    current = LISTING.event(PK, 1_000).signed("11" * 64)

    assert needs_publishing(listing, current, 1_000 + age)


def test_needs_publishing_is_true_when_relay_has_no_copy() -> None:
    assert needs_publishing(LISTING, None, 1_000)


def test_next_created_at_moves_past_relay_copy_when_clock_lags() -> None:
    assert next_created_at(100, replace(EVENT, created_at=100)) == 101
    assert next_created_at(100, replace(EVENT, created_at=50)) == 100
    assert next_created_at(100, None) == 100


def test_newest_prefers_latest_then_lowest_id() -> None:
    older = replace(EVENT, created_at=1, id="00" * 32)
    tie_high = replace(EVENT, created_at=2, id="ff" * 32)
    tie_low = replace(EVENT, created_at=2, id="0f" * 32)

    assert newest([older, tie_high, tie_low]) == tie_low
    assert newest([]) is None


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [(1, 0.0, 5.0), (2, 0.0, 10.0), (3, 0.0, 20.0), (8, 0.0, 640.0), (9, 0.0, 900.0), (500, 0.0, 900.0),
     (1, 1.0, 6.0), (1, -1.0, 4.0), (9, 1.0, 1080.0), (9, -5.0, 720.0)],
)  # fmt: skip
def test_backoff_seconds_doubles_from_5_to_900_with_20_percent_jitter(
    failures: int, jitter: float, expected: float
) -> None:
    assert backoff_seconds(failures, jitter) == pytest.approx(expected)


# -- discovery -------------------------------------------------------------------------------------------------------
def test_announcement_from_event_reads_tags_and_content() -> None:
    event = replace(EVENT, tags=(*EVENT.tags, ("u", "http://abc.onion"), ("mint", "https://mint.b")))

    announcement = announcement_from_event(event)

    assert announcement.provider_id == "node-1"
    assert announcement.urls == ("https://node.example", "http://abc.onion")
    assert announcement.endpoint_url == "https://node.example"
    assert announcement.mints == ("https://mint.a", "https://mint.b")
    assert (announcement.name, announcement.about, announcement.version) == ("Node", "About it", "0.1.0")


def test_announcement_from_event_tolerates_missing_name_and_about() -> None:
    announcement = announcement_from_event(replace(EVENT, content='{"name": 5}'))

    assert (announcement.name, announcement.about) == ("", None)


@pytest.mark.parametrize(
    "event",
    [
        replace(EVENT, tags=(("u", "https://node.example"),)),
        replace(EVENT, content="not json"),
        replace(EVENT, content="[1, 2]"),
        replace(EVENT, kind=1),
    ],
    ids=["no-d", "not-json", "not-object", "wrong-kind"],
)
def test_announcement_from_event_raises_when_event_is_not_a_listing(event: Event) -> None:
    with pytest.raises(MalformedEventError):
        announcement_from_event(event)


def test_select_providers_keeps_newest_per_pubkey_and_d() -> None:
    old = replace(ANNOUNCEMENT, created_at=100, event_id="01" * 32)
    new = replace(ANNOUNCEMENT, created_at=200, event_id="02" * 32)
    other_d = replace(ANNOUNCEMENT, provider_id="node-2", created_at=150, event_id="03" * 32)
    other_author = replace(ANNOUNCEMENT, pubkey="cd" * 32, created_at=50, event_id="04" * 32)

    selected = select_providers([old, other_author, new, other_d])

    assert selected == (new, other_d, other_author)


def test_select_providers_drops_newest_when_all_its_urls_are_loopback() -> None:
    public = replace(ANNOUNCEMENT, created_at=100, event_id="01" * 32)
    local = replace(ANNOUNCEMENT, created_at=200, event_id="02" * 32, urls=("http://127.0.0.1:8000",))
    mixed = replace(ANNOUNCEMENT, pubkey="cd" * 32, event_id="03" * 32, urls=("http://localhost", "https://b.example"))
    no_urls = replace(ANNOUNCEMENT, pubkey="ef" * 32, event_id="04" * 32, urls=())

    selected = select_providers([public, local, mixed, no_urls])

    assert selected == (mixed,)
