"""The extractive processor's pure extractors on tricky inputs (no database)."""

from __future__ import annotations

import random
import re

import pytest

from tg_parser.processing.extractive import (
    clean_text,
    cleaning,
    detect_language,
    entities,
    extract,
    extract_entities,
    hashtags,
    language,
    strip_tracking,
    summarize,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ex.com/a?utm_source=tg&utm_medium=x&id=5", "https://ex.com/a?id=5"),
        ("https://ex.com/a?fbclid=abc", "https://ex.com/a"),
        ("https://ex.com/a?id=5#frag", "https://ex.com/a?id=5#frag"),  # untouched when nothing to drop
        ("https://ex.com/p?q=a%20b&gclid=1&yclid=2", "https://ex.com/p?q=a+b"),
        ("www.ex.com/x?UTM_Campaign=z&k=v", "www.ex.com/x?k=v"),
    ],
)
def test_strip_tracking(url, expected):
    assert strip_tracking(url) == expected


def test_clean_text_removes_markup_keeps_urls_and_normalises():
    raw = (
        "**Bold** __italic__ ~~gone~~ ||spoiler|| `code` <b>html</b> [site](https://ex.com/?utm_source=a&x=1)\n\n\n\n"
        "Wow!!!!   Really???  Yes.... 🔥🔥🔥🔥 👍🔥 and https://t.me/chan/5?utm_campaign=q."
    )
    assert clean_text(raw) == (
        "Bold italic gone spoiler code html site (https://ex.com/?x=1)\n\n"
        "Wow! Really? Yes… 🔥 👍🔥 and https://t.me/chan/5."
    )


def test_clean_text_keeps_nested_markup_content_and_rtl():
    assert clean_text("**bold __and italic__ inside**") == "bold and italic inside"
    rtl = "‏مرحبا بالعالم!!! زوروا https://ex.com/?utm_source=x"
    assert clean_text(rtl) == "‏مرحبا بالعالم! زوروا https://ex.com/"


def test_url_with_parentheses_and_trailing_punctuation():
    text = "See https://en.wikipedia.org/wiki/Foo_(bar), and (https://ex.com/a)."
    assert extract_entities(text) == [
        {"type": "url", "value": "https://en.wikipedia.org/wiki/Foo_(bar)", "confidence": 1.0},
        {"type": "url", "value": "https://ex.com/a", "confidence": 1.0},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("First sentence. Second one.", "First sentence."),
        ("Вопрос? Ответ.", "Вопрос?"),
        ("No terminal punctuation here", "No terminal punctuation here"),
        ("v1.2 released. Notes follow.", "v1.2 released."),
        ("word " * 80, " ".join(["word"] * 40) + "…"),  # 200 characters, cut at a word boundary
        ("", ""),
    ],
)
def test_summarize_is_a_prefix_never_invented(text, expected):
    summary = summarize(text)
    assert summary == expected
    assert summary.rstrip("…") in text


def test_hashtags_normalised_and_deduplicated():
    assert hashtags("#Новости и #news, #NEWS again, #2024 is not a tag, a#b neither, #Tag_1") == [
        "новости",
        "news",
        "tag_1",
    ]


def test_entities_of_every_kind():
    text = "Mail Info@Example.ORG, call +7 (999) 123-45-67, ping @some_channel, buy $btc #Crypto https://x.io/?fbclid=1"
    kinds = {(e["type"], e["value"]) for e in extract_entities(text)}
    assert kinds == {
        ("email", "info@example.org"),
        ("phone", "+79991234567"),
        ("mention", "@some_channel"),
        ("cashtag", "$BTC"),
        ("hashtag", "#crypto"),
        ("url", "https://x.io/"),
    }
    assert all(e["confidence"] == 1.0 for e in extract_entities(text))


def test_dates_and_short_numbers_are_not_phones():
    assert [e for e in extract_entities("on 2024-05-01 we sold 1234 units") if e["type"] == "phone"] == []


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Это обычный текст на русском языке, и он про новости.", "ru"),
        ("Це звичайний текст українською мовою і він про новини.", "uk"),
        ("Това е обикновен текст на български език за новините.", "bg"),
        ("This is an ordinary English text about the news of the day.", "en"),
        ("Das ist ein ganz normaler Text und er ist nicht lang.", "de"),
        ("C'est un texte normal pour les nouvelles dans la ville.", "fr"),
        ("Este es un texto normal para las noticias de la ciudad.", "es"),
        ("مرحبا بالعالم هذا نص عربي", "ar"),
        ("שלום עולם זה טקסט בעברית", "he"),
        ("これは日本語のテキストです", "ja"),
        ("这是中文文本", "zh"),
        ("🔥🔥🔥 https://ex.com 12345", "und"),
        ("", "und"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text) == lang


def test_empty_and_media_only_messages():
    result = extract("")
    assert (result.text_clean, result.summary, result.topics, result.entities, result.language) == (
        "",
        "",
        [],
        [],
        "und",
    )
    emoji_only = extract("📷")
    assert emoji_only.text_clean == "📷" and emoji_only.language == "und"


def test_extract_is_deterministic():
    text = "Запуск ракеты!!! 🚀🚀 https://ex.com/?utm_source=tg #space @chan"
    assert extract(text) == extract(text)


# --- markup stripping never corrupts URLs, code or identifiers -------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://example.com/a__b__c/x", "https://example.com/a__b__c/x"),
        ("see https://example.com/a__b__c/x?utm_source=tg now", "see https://example.com/a__b__c/x now"),
        ("https://ex.com/x*y*z and https://ex.com/~a~/b", "https://ex.com/x*y*z and https://ex.com/~a~/b"),
        ("__init__", "__init__"),
        (
            "call obj.__dict__, run __main__.py or __foo__(x)",
            "call obj.__dict__, run __main__.py or __foo__(x)",
        ),
        ("obj.__custom__ stays", "obj.__custom__ stays"),
        ("**kwargs and **options", "**kwargs and **options"),
        ("snake__case__name and a**b**c", "snake__case__name and a**b**c"),
        ("`**kwargs` and `a__b__c`", "**kwargs and a__b__c"),
        ("```py\ndef f(**kw): return __x__\n```", "def f(**kw): return __x__"),
        ("** not bold ** and __ not italic __", "** not bold ** and __ not italic __"),
    ],
)
def test_markup_stripping_keeps_urls_code_and_identifiers(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("**https://x.io/a?utm_source=1**", "https://x.io/a"),
        ("~~https://ex.com/a~~.", "https://ex.com/a."),
        ("||spoiler https://ex.com/a_b_||", "spoiler https://ex.com/a_b_"),
        ("(**https://ex.com/a**)", "(https://ex.com/a)"),
        ("__**bold italic**__ and **__italic bold__**", "bold italic and italic bold"),
        ("[**site**](https://ex.com/a__b__?utm_source=x)", "site (https://ex.com/a__b__)"),
    ],
)
def test_markup_around_urls_and_nested_markup_is_removed(raw, expected):
    assert clean_text(raw) == expected


def test_url_entity_excludes_markup_closing_around_it():
    assert [e["value"] for e in extract_entities("**see https://x.io/a__b__?utm_source=1**")] == [
        "https://x.io/a__b__"
    ]


def test_placeholder_characters_in_the_input_cannot_collide():
    assert clean_text("\ue0000\ue001 https://ex.com/a \ue000 0 \ue001") == "0 https://ex.com/a 0"


# --- phone numbers: real ones found, dates, ISBNs and plain numbers not -------------------------------


def _phones(text: str) -> list[object]:
    return [e["value"] for e in extract_entities(text) if e["type"] == "phone"]


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-15 10:30",
        "on 15.01.2024 12 30 we met",
        "100 200 300 400",
        "1 000 000 000 rubles",
        "978-3-16-148410-0",
        "ISBN 978-3-16-148410-0",
        "ISBN-10: 3-16-148410-0",
        "192.168.100.200",
        "2019 2020 2021",
        "10 20 30 40 50",
        "order 88005553535",
        "12 345 678,90 rub",
        "v1.2345678901",
    ],
)
def test_numbers_that_are_not_phones(text):
    assert _phones(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+7 (999) 123-45-67", ["+79991234567"]),
        ("+1 (555) 123-4567", ["+15551234567"]),
        ("8 (800) 555-35-35", ["88005553535"]),
        ("+44 20 7946 0958", ["+442079460958"]),
        ("call 8 (800) 555-35-35 2 times", ["88005553535"]),
        ("US: 555-123-4567 or 555.123.4567", ["5551234567"]),
        ("8 999 123 45 67", ["89991234567"]),
        ("Paris 01 23 45 67 89", ["0123456789"]),
        ("tel: +49 30 1234 5678.", ["+493012345678"]),
        ("+7 999 123 45 67\n+7 999 000 11 22", ["+79991234567", "+79990001122"]),
    ],
)
def test_phones_are_found(text, expected):
    assert _phones(text) == expected


# --- the fast paths match what they replaced ----------------------------------------------------------
# The extractors skip passes a text cannot need, count scripts on UTF-8 bytes and use reordered regexes
# (a literal before its lookbehind, so the engine can skip ahead). These tests hold each of them to the
# straightforward form it replaced, on generated texts dense in the characters that matter.

_ORIGINAL_PATTERNS = {
    (cleaning, "URL"): re.compile(
        r"(?:https?://|www\.)[^\s<>\"'«»()\[\]{}]+(?:\([^\s()]*\)[^\s<>\"'«»()\[\]{}]*)*", re.I
    ),
    (entities, "MENTION"): re.compile(r"(?<![\w@./])@([A-Za-z][A-Za-z0-9_]{3,31})\b"),
    (entities, "HASHTAG"): re.compile(r"(?<![\w#&/])#(\w*[^\W\d]\w*)"),
    (entities, "_CASHTAG"): re.compile(r"(?<![\w$])\$([A-Za-z]{1,6})(?![\w])"),
    (cleaning, "_DUNDER"): re.compile(
        r"(?<!\w)__([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)__(?!\w)(?=(\.\w|\()?)"
    ),
    (entities, "_PHONE"): re.compile(
        r"(?<![\w+])\+?(?:\(\d{1,5}\)|\d+)(?:(?:[ \u00a0]?[-.\u2010-\u2013][ \u00a0]?|[ \u00a0])\d{2,}"
        r"|(?:[ \u00a0]?[-.\u2010-\u2013][ \u00a0]?|[ \u00a0])?\(\d{1,5}\)"
        r"|(?<=\))(?:[ \u00a0]?[-.\u2010-\u2013][ \u00a0]?|[ \u00a0])?\d{2,})*"
    ),
}
_ORIGINAL_MARKS = [
    re.compile(r"(?<![^\W_])\*\*(?!\s)(.+?)(?<!\s)\*\*(?![^\W_])", re.S),
    re.compile(r"(?<!\w)__(?!\s)(.+?)(?<!\s)__(?!\w)", re.S),
    re.compile(r"(?<![^\W_])~~(?!\s)(.+?)(?<!\s)~~(?![^\W_])", re.S),
    re.compile(r"(?<![^\W_])\|\|(?!\s)(.+?)(?<!\s)\|\|(?![^\W_])", re.S),
    re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])"),
    re.compile(r"(?<![\w~])~(?!\s)([^~\n]+?)(?<!\s)~(?![\w~])"),
]
_PIECES = [
    "a", "Z", "б", "é", "_", "1", "23", "٣", " ", "\n", "\t", "\u00a0", ".", ",", ":", "/", "(", ")", "+", "-",
    "–", "@", "#", "$", "&", "*", "**", "~", "~~", "|", "||", "__", "h", "H", "t", "T", "p", "s", "S", "ſ", "w",
    "W", "www.", "http://", "HTTPS://", "?", "=", "«", "]", "!", "…", "🔥", "x@y.io", "init", "ISBN",
]  # fmt: skip


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 30))) for _ in range(count)]


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[tuple[int, int], tuple[str | None, ...]]]:
    return [(m.span(), m.groups()) for m in pattern.finditer(text)]


@pytest.mark.parametrize("where", sorted(_ORIGINAL_PATTERNS, key=lambda w: w[1]), ids=lambda w: w[1])
def test_reordered_patterns_match_exactly_as_before(where):
    module, name = where
    for text in _texts(4000, seed=len(name.lstrip("_")) + 1):
        assert _spans(getattr(module, name), text) == _spans(_ORIGINAL_PATTERNS[where], text), text


def test_reordered_markup_patterns_match_exactly_as_before():
    for text in _texts(4000, seed=7):
        for (_, pattern), original in zip(cleaning._MD_MARKS, _ORIGINAL_MARKS, strict=True):
            assert _spans(pattern, text) == _spans(original, text), text


def test_repeated_punctuation_pattern_replaces_as_before():
    original = re.compile(r"([!?])\1{1,}|([,;:])\2+|\.{4,}|…{2,}")
    rng = random.Random(3)
    for _ in range(4000):
        text = "".join(rng.choice("!?,;:.…a ") for _ in range(rng.randint(1, 20)))
        before = [
            (m.span(), "…" if m.group(0)[0] in ".…" else (m.group(1) or m.group(2)))
            for m in original.finditer(text)
        ]
        now = [
            (m.span(), "…" if m.group(0)[0] in ".…" else m.group(0)[0])
            for m in cleaning._REPEATED_PUNCT.finditer(text)
        ]
        assert now == before, text


def test_e_mail_span_finds_what_the_whole_text_does():
    for text in [*_texts(4000, seed=11), "a@b.io", "x\ny.z@mail.example.org\tend", "@@ a@b.cd@e.fg"]:
        if "@" in text:
            expected = [m.span() for m in entities.EMAIL.finditer(text)]
            assert [m.span() for m in entities.EMAIL.finditer(text, *entities.email_span(text))] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Привет, мир! Hello world ÀÉÎ ȀɏɐɀX ×÷",  # Latin-1, Extended-A/B (U+0240-024F) and just beyond
        "Ѐѐ҂Ӿӿ ԀZ",  # the edges of the Cyrillic block and just beyond
        "mixed שלום Ελληνικά 日本語 カナ 한국어 हिन्दी ქართული Հայերեն ไทย مرحبا",
        "lone \ud800 surrogate, привет",
        "",
        "12345 🔥",
    ],
)
def test_script_counts_equal_a_regex_per_script(text):
    expected = {name: n for name, pattern in language._SCRIPT_PATTERNS if (n := len(pattern.findall(text)))}
    assert language._script_counts(text) == expected


def test_common_word_scores_pick_the_same_language_as_counting_per_language():
    def best(words: list[str], candidates: tuple[str, ...], default: str) -> str:
        scores = {lang: sum(1 for w in words if w in language._WORDS[lang]) for lang in candidates}
        top = max(candidates, key=lambda lang: (scores[lang], -candidates.index(lang)))
        return top if scores[top] > 0 else default

    vocabulary = [*sorted(language._WORD_LANGS), "İstanbul", "STRASSE", "ǅ", "x", "für", "DER"]
    rng = random.Random(5)
    latin = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "tr")
    for _ in range(3000):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 8))]
        expected = best([w.casefold() for w in words], latin, "und")
        assert language._best(words, latin, "und") == expected, words


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("🔥🔥🔥 ©© ҂҂ ★★", "🔥 © ҂ ★"),  # emoji (So) in and beyond the BMP collapse
        ("🄁🄁", "🄁"),  # U+1F101 is not So but lies in the emoji block
        ("𝐀𝐀 нн ll ❤️❤️", "𝐀𝐀 нн ll ❤️❤️"),  # letters beyond the BMP, doubled letters, emoji + VS16 stay
        ("👍\ufe0f\ufe0f\ufe0f", "👍\ufe0f"),
    ],
)
def test_repeated_emoji_collapse(text, expected):
    assert clean_text(text) == expected


def test_process_row_is_the_row_of_the_validated_document():
    # The coordinator writes process_row's row, not process()'s model: both must store the same JSON,
    # whatever the markup, entities, summary (or none) and message type.
    from datetime import UTC, datetime, timedelta, timezone

    from tg_parser.processing.extractive import ExtractiveDocumentProcessor
    from tg_parser.processing.processor import EmptyMessage
    from tg_parser.stores.processing import ProcessingStore

    processor = ExtractiveDocumentProcessor()
    fixed = datetime(2025, 1, 1, tzinfo=UTC)
    texts = [
        "**Новости**: релиз 2.0 https://ex.com/a?utm_source=tg&id=7 @dev_chat info@ex.com #python $BTC",
        "Звоните +7 (999) 123-45-67 до 18:00… 🔥🔥🔥",
        "plain words without a sentence end",
        "",
    ]
    for i, text in enumerate(texts, start=1):
        # A date in another zone (what PostgreSQL may hand back) is stored as the same UTC instant.
        date = datetime(2025, 5, i, 12, tzinfo=timezone(timedelta(hours=3)))
        message = {"source_ref": f"tg:-100:comment:{i}", "channel_id": -100, "date": date, "text": text}
        message["message_type"] = "comment"
        if not text:
            with pytest.raises(EmptyMessage):
                processor.process_row(message)
            continue
        row = processor.process_row(message)
        row.row["processed_at"] = fixed
        document = processor.process(message).model_copy(update={"processed_at": fixed})
        assert row.source_ref == document.source_ref
        assert ProcessingStore.documents_json([row]) == ProcessingStore.documents_json([document])
