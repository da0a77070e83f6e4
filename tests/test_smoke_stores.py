from datetime import UTC, datetime

from tg_parser.domain.models import RawMessage, Source
from tg_parser.stores import IngestionStore, RawStore


def test_source_roundtrip(db):
    store = IngestionStore(db)
    assert store.add_source(Source(source_id="a'b%c:d;e", username="x"))
    assert not store.add_source(Source(source_id="a'b%c:d;e"))
    assert store.get_source("a'b%c:d;e").username == "x"


def test_raw_batch(db):
    raw = RawStore(db)
    m = RawMessage.build(
        channel_id=1, message_type="post", message_id=5, date=datetime(2025, 1, 2, tzinfo=UTC), text="hi"
    )
    r = raw.store_batch([m])
    assert r.inserted == 1
    m2 = m.model_copy(update={"text": "edited", "edit_date": datetime(2025, 1, 3, tzinfo=UTC)})
    r = raw.store_batch([m2])
    assert r.versions == 1 and r.inserted == 0
    assert raw.get(m.source_ref).text == "hi"
    assert raw.get(m.source_ref).date == datetime(2025, 1, 2, tzinfo=UTC)
