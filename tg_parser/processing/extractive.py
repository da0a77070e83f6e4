"""The extractive processor: deterministic, offline enrichment of a message (no LLM, no network).

Every field is taken from the message itself, never invented:
* text_clean — Telegram/Markdown/HTML markup removed, URLs kept without tracking parameters,
  whitespace, repeated emoji and repeated punctuation normalised;
* summary — the first sentence, or the first 200 characters cut at a word boundary;
* topics — the message's hashtags, normalised;
* entities — URLs, @mentions, hashtags, e-mails, phone numbers and cashtags (confidence 1.0);
* language — from the script and common words (ISO 639-1, or "und").
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tg_parser.domain.models import ProcessedDocument
from tg_parser.processing.processor import EmptyMessage

if TYPE_CHECKING:
    from tg_parser.processing.pipeline import ProcessOptions

SUMMARY_MAX = 200

TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "yclid", "ysclid", "msclkid", "mc_cid", "mc_eid",
        "igshid", "igsh", "_hsenc", "_hsmi", "mkt_tok", "vero_id", "oly_anon_id", "oly_enc_id", "rb_clickid",
        "s_cid", "twclid", "ttclid", "li_fat_id", "wickedid", "spm", "scm", "_openstat", "ref_src", "ref_url",
    }
)  # fmt: skip
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_")

# URLs: scheme or www. (any case), up to whitespace or a closing bracket/quote; trailing punctuation is
# trimmed after. Spelled as a character class first instead of "(?:https?://|www\.)" with re.I, which
# matches the same ("ſ" is an "s" under re.I; the rest of the pattern is case-blind), so the engine
# jumps between h/w characters instead of trying every position.
_URL = re.compile(
    r"[hHwW](?:(?<=[hH])[tT][tT][pP][sSſ]?://|(?<=[wW])[wW][wW]\.)"
    r"[^\s<>\"'«»()\[\]{}]+(?:\([^\s()]*\)[^\s<>\"'«»()\[\]{}]*)*"
)
_TRAILING = ".,;:!?…)»\"'"
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


def _email_span(text: str) -> tuple[int, int]:
    """Where _EMAIL can match in a text holding "@": from the word of the first "@" to the end of the
    word of the last one (words split at " " and newline). An address is one run of [\\w.+-] characters,
    "@" and [A-Za-z0-9.-] characters, so it never crosses a space or newline; and as both bounds sit
    next to one (or at an end of the text), the lookbehind and the closing \\b see the same thing there
    as in the whole text. _EMAIL's leading lookbehind keeps the engine from skipping ahead, so
    scanning only this span is what makes a long message with one @mention cheap."""
    first, last = text.index("@"), text.rindex("@")
    start = max(text.rfind(" ", 0, first), text.rfind("\n", 0, first)) + 1
    ends = [i for i in (text.find(" ", last), text.find("\n", last)) if i >= 0]
    return start, min(ends, default=len(text))


# Patterns that begin with a literal check the character before it *after* the literal ("#(?<![\w#&/]#)"
# rather than "(?<![\w#&/])#"): the same matches, but the regex engine can jump from one "#" to the next
# instead of evaluating the lookbehind at every position (~10x faster on long texts).
_MENTION = re.compile(r"@(?<![\w@./]@)([A-Za-z][A-Za-z0-9_]{3,31})\b")
_HASHTAG = re.compile(r"#(?<![\w#&/]#)(\w*[^\W\d]\w*)", re.UNICODE)
_CASHTAG = re.compile(r"\$(?<![\w$]\$)([A-Za-z]{1,6})(?![\w])")
# Phone candidates: digit groups joined by one separator (space, hyphen/dash or dot, optionally spaced),
# with an optional leading + and parenthesised area code. Groups after the first need two or more
# digits, so a phone followed by a count ("555-35-35 2 times") does not swallow it. Whether a
# candidate is a phone is decided by _phone_value, never by the regex alone.
_PHONE_SEP = r"(?:[ \u00a0]?[-.\u2010-\u2013][ \u00a0]?|[ \u00a0])"
# "(?<![\w+])\+?(?:\(\d{1,5}\)|\d+)" written to start with the class of its first character ("+", "("
# or a digit; see _HASHTAG for the lookbehind after it), then the branch that character allows.
_PHONE = re.compile(
    r"[+(\d](?<![\w+].)(?:(?<=\+)(?:\(\d{1,5}\)|\d+)|(?<=\()\d{1,5}\)|(?<=\d)\d*)"
    rf"(?:{_PHONE_SEP}\d{{2,}}|{_PHONE_SEP}?\(\d{{1,5}}\)|(?<=\)){_PHONE_SEP}?\d{{2,}})*"
)
_PHONE_GROUP = re.compile(r"\d+")
_PHONE_AREA = re.compile(r"\(\d{2,5}\)")
_PHONE_DATE = re.compile(
    r"(?<!\d)(?:(?:19|20)\d{2}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./ ]\d{1,2}[-./ ](?:19|20)\d{2})(?!\d)"
)
_PHONE_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_ISBN_BEFORE = re.compile(r"isbn(?:-1[03])?[:\s]*$", re.I)

_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_HTML_LINK = re.compile(r"<a\s[^>]*href=[\"']([^\"']+)[\"'][^>]*>(.*?)</a>", re.I | re.S)
_HTML_TAG = re.compile(
    r"</?(?:b|strong|i|em|u|ins|s|strike|del|code|pre|span|tg-spoiler|tg-emoji|blockquote|br|p|a)(?:\s[^>]*)?/?>",
    re.I,
)
# Code is taken out before any markup is stripped: its content is kept as written (minus the fences).
_MD_CODE = [
    re.compile(r"```(?:[a-z0-9_+-]*\n)?(.+?)```", re.S),
    re.compile(r"`([^`\n]+)`"),
]
# Paired markers count only on word boundaries: the opening marker not preceded by a letter/digit, the
# closing one not followed by one, and the content neither starting nor ending with whitespace — so
# "**kwargs and **options" or "snake__case__name" stay as written. "_" is not a boundary for "**",
# "~~" and "||", so "__**bold italic**__" nests; for "__" itself any word character is.
# Each with the marker it needs: a text without it skips the pattern. The opening lookbehind follows the
# marker (see _HASHTAG).
_MD_MARKS = [
    ("**", re.compile(r"\*\*(?<![^\W_]\*\*)(?!\s)(.+?)(?<!\s)\*\*(?![^\W_])", re.S)),
    ("__", re.compile(r"__(?<!\w__)(?!\s)(.+?)(?<!\s)__(?!\w)", re.S)),
    ("~~", re.compile(r"~~(?<![^\W_]~~)(?!\s)(.+?)(?<!\s)~~(?![^\W_])", re.S)),
    ("||", re.compile(r"\|\|(?<![^\W_]\|\|)(?!\s)(.+?)(?<!\s)\|\|(?![^\W_])", re.S)),
    ("*", re.compile(r"\*(?<![\w*]\*)(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")),
    ("~", re.compile(r"~(?<![\w~]~)(?!\s)([^~\n]+?)(?<!\s)~(?![\w~])")),
]
# Markers that may close around a URL ("**https://x.io**"); the URL pattern would otherwise take the
# closing marker as part of the URL.
_MD_WRAP_MARKS = [
    (mark, re.compile(rf"(?<![^\W_]){re.escape(mark)}(?!\s)")) for mark in ("**", "__", "~~", "||", "*", "~")
]
# Dunder identifiers (__init__, obj.__dict__, __main__.py) are code, not italic markup.
# Common English words (and, next, set, ...) are left out: "__next__" alone is more likely italic.
_PY_DUNDER_NAMES = """
    init new del repr str bytes hash bool call len iter getitem setitem delitem contains enter exit aenter
    aexit await aiter anext name main file doc dict class module slots all version qualname annotations
    getattr getattribute setattr delattr eq ne lt le gt ge add sub mul truediv floordiv mod pow neg pos abs
    post_init init_subclass class_getitem set_name reduce_ex getstate setstate sizeof subclasshook
    instancecheck subclasscheck builtins
"""
_PY_DUNDERS = frozenset(_PY_DUNDER_NAMES.split())
_DUNDER = re.compile(r"__(?<!\w__)([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)__(?!\w)(?=(\.\w|\()?)")
# Placeholders for protected spans: private-use characters, removed from the input beforehand so they
# cannot collide with the message's own text.
_PH_OPEN, _PH_CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_PH_OPEN}(\\d+){_PH_CLOSE}")
# Runs of one punctuation mark: !! ?? ,, ;; :: and four or more dots or two or more ellipses. Every branch
# starts with a literal, so the engine looks for those characters only.
_REPEATED_PUNCT = re.compile(r"!!+|\?\?+|,,+|;;+|::+|\.\.\.\.+|……+")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# The spaces _SPACES replaces other than " ": a text without them (and without "  ") needs no pass.
_ODD_SPACE = re.compile(r"[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]")
# What _REPEATED_PUNCT needs: without one of these substrings it cannot match.
_PUNCT_RUNS = ("!!", "??", ",,", ";;", "::", "....", "……")
_BLANK_LINES = re.compile(r"\n{3,}")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u2060\ufeff\ue000\ue001]")
_SENTENCE = re.compile(r"^(.+?[.!?…])(?=\s|$)", re.S)


@dataclass
class Extraction:
    text_clean: str
    summary: str
    topics: list[str]
    entities: list[dict[str, object]] = field(default_factory=list)
    language: str = "und"


def _may_have_url(text: str) -> bool:
    """False when _URL cannot match (no "://" and no "www." in any case): the common text skips the pass."""
    return "://" in text or ("." in text and "www." in text.lower())


def strip_tracking(url: str) -> str:
    """Drop utm_* and similar tracking parameters; everything else of the URL stays as written."""
    if "?" not in url:
        return url  # no query: nothing to drop
    return _strip_query(url)


# The same URL is stripped twice per message (clean text and entities) and channels repeat their links.
@lru_cache(maxsize=4096)
def _strip_query(url: str) -> str:
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return url
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [
        (k, v)
        for k, v in pairs
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    ]
    if len(kept) == len(pairs):
        return url
    rebuilt = urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(kept, doseq=True), parts.fragment)
    )
    return rebuilt if "://" in url else rebuilt.split("://", 1)[1]


def _split_url(match_text: str) -> tuple[str, str]:
    """A URL and the punctuation that ended the sentence after it."""
    url = match_text
    tail = ""
    while url and url[-1] in _TRAILING:
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        tail = url[-1] + tail
        url = url[:-1]
    return url, tail


def find_urls(text: str) -> list[str]:
    urls: list[str] = []
    if not _may_have_url(text):
        return urls
    for match in _URL.finditer(text):
        url, _ = _url_of(text, match)
        if url:
            urls.append(url)
    return urls


def _is_emoji(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF


_REPEATED_VS16 = re.compile("\ufe0f{2,}")


_EMOJI_RUN: re.Pattern[str] | None = None
_EMOJI_RUN_LOCK = threading.Lock()  # the pipeline's worker threads may all ask for it at once


def _repeated_emoji() -> re.Pattern[str]:
    global _EMOJI_RUN
    if _EMOJI_RUN is None:
        with _EMOJI_RUN_LOCK:
            if _EMOJI_RUN is None:
                _EMOJI_RUN = _build_repeated_emoji()
    return _EMOJI_RUN


def _build_repeated_emoji() -> re.Pattern[str]:
    """A run of one repeated character that may be an emoji.

    "(.)\\1+" would stop at every doubled letter ("ll", "нн") and call back into Python for it; this class
    holds exactly the BMP characters that _is_emoji accepts (from this Python's Unicode data, a few ms
    once), plus every character beyond the BMP, which the callback still checks. (Listing the exact
    ranges beyond the BMP too would make the engine test each of them in turn for every character.)
    """
    ranges: list[str] = []
    start = prev = -2
    for code in range(0x10000):
        if _is_emoji(chr(code)):
            if code != prev + 1:
                if start >= 0:
                    ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
                start = code
            prev = code
    ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
    return re.compile(f"([{''.join(ranges)}\U00010000-\U0010ffff])\\1+", re.S)


def _collapse_emoji(text: str) -> str:
    """Runs of the same emoji (🔥🔥🔥) become one; different emoji stay."""
    if text.isascii():
        return text  # no emoji, no variation selector
    if "\ufe0f\ufe0f" in text:
        text = _REPEATED_VS16.sub("\ufe0f", text)
    return _repeated_emoji().sub(lambda m: m.group(1) if _is_emoji(m.group(1)) else m.group(0), text)


class _Protected:
    """Spans taken out of the text behind placeholders, so markup stripping cannot touch them."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def hide(self, value: str) -> str:
        self.values.append(value)
        return f"{_PH_OPEN}{len(self.values) - 1}{_PH_CLOSE}"

    def restore(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.values[int(m.group(1))], text)


def _clean_urls(text: str) -> str:
    if not _may_have_url(text):
        return text
    return _URL.sub(lambda m: (lambda u, t: strip_tracking(u) + t)(*_split_url(m.group(0))), text)


def _url_of(text: str, match: re.Match[str]) -> tuple[str, str]:
    """The URL of a _URL match (as written) and the text after it that the pattern took but that is not
    part of it: sentence punctuation, and a markup marker closing around the URL ("**https://x.io**",
    "||see https://x.io||") when the same marker opens earlier on the line."""
    url, tail = _split_url(match.group(0))
    before = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
    trimmed = True
    while trimmed:
        trimmed = False
        for mark, opening in _MD_WRAP_MARKS:
            found = list(opening.finditer(before)) if url.endswith(mark) else []
            if found and len(url) > len(mark):
                url, tail = url[: -len(mark)], mark + tail
                before = before[: found[-1].start()] + before[found[-1].end() :]
                trimmed = True
                break
    url, more = _split_url(url)
    return url, more + tail


def _hide_urls(text: str, protected: _Protected) -> str:
    """URLs, without tracking parameters, behind placeholders."""

    def replace(match: re.Match[str]) -> str:
        url, rest = _url_of(text, match)
        return protected.hide(strip_tracking(url)) + rest

    return _URL.sub(replace, text)


def _hide_dunder(match: re.Match[str], protected: _Protected) -> str:
    """An attribute (obj.__x__), a call or file name (__x__(), __x__.py) or a well-known dunder stays as is."""
    name, follow = match.group(1), match.group(2)
    attribute = match.string[match.start() - 1 : match.start()] == "."
    if attribute or follow or name.lower() in _PY_DUNDERS:
        return protected.hide(match.group(0))
    return match.group(0)


def clean_text(text: str) -> str:
    # Every pass is skipped when the text lacks the character it needs ("<", "`", "](", "__", a marker, ...):
    # a plain message pays for a few substring checks instead of some twenty regex scans. Each check is
    # on the current value, so the passes and their order are those of the full pipeline.
    value = html.unescape(text or "")
    if not value.isascii():
        value = _ZERO_WIDTH.sub("", value)
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if "<" in value:
        value = _HTML_LINK.sub(lambda m: f"{_HTML_TAG.sub('', m.group(2))} ({m.group(1)})", value)
        value = _HTML_TAG.sub("", value)
    # Code, URLs and identifiers are hidden before markup stripping and come back afterwards untouched:
    # "https://ex.com/a__b__c", "`**kwargs`" and "__init__" keep their underscores and asterisks.
    protected = _Protected()
    for pattern in _MD_CODE:
        if "`" in value:
            value = pattern.sub(lambda m: protected.hide(_clean_urls(m.group(1))), value)
    if "](" in value:
        value = _MD_LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", value)
    if _may_have_url(value):
        value = _hide_urls(value, protected)
    if "__" in value:
        value = _DUNDER.sub(lambda m: _hide_dunder(m, protected), value)
    for mark, pattern in _MD_MARKS:
        if mark in value:
            value = pattern.sub(r"\1", value)
    if protected.values:  # placeholders exist only for hidden values (the input's own were removed above)
        value = protected.restore(value)
    if any(run in value for run in _PUNCT_RUNS):
        value = _REPEATED_PUNCT.sub(lambda m: "…" if m.group(0)[0] in ".…" else m.group(0)[0], value)
    value = _collapse_emoji(value)
    # _SPACES holds no newline, so one pass over the text equals one per line.
    if "  " in value or "\t" in value or (not value.isascii() and _ODD_SPACE.search(value)):
        value = _SPACES.sub(" ", value)
    if "\n" in value:
        value = "\n".join([line.strip() for line in value.split("\n")])
        if "\n\n\n" in value:
            value = _BLANK_LINES.sub("\n\n", value)
    return value.strip()


def summarize(text_clean: str) -> str:
    """The first sentence, or the first 200 characters cut at a word boundary (never invented text)."""
    first_par = text_clean.strip().split("\n", 1)[0].strip()
    if not first_par:
        return ""
    match = _SENTENCE.match(first_par)
    sentence = match.group(1).strip() if match else first_par
    if len(sentence) <= SUMMARY_MAX:
        return sentence
    cut = sentence[:SUMMARY_MAX]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(",;:-–— ") + "…"


def normalise_hashtag(tag: str) -> str:
    return unicodedata.normalize("NFC", tag).casefold().strip("_")


def hashtags(text: str) -> list[str]:
    seen: dict[str, None] = {}
    if "#" not in text:
        return []
    for match in _HASHTAG.finditer(text):
        tag = normalise_hashtag(match.group(1))
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def _phone_value(text: str, match: re.Match[str]) -> str | None:
    """The phone number a candidate stands for (digits, "+" kept), or None when it is not one.

    Accepted: a leading "+" with 8-15 digits; a parenthesised area code with 10-15 digits; or 2-5
    separated groups with 10-15 digits that do not read as a date/time, an ISBN, an IPv4 address, a
    thousands-grouped number (1 000 000 000, 100 200 300 400) or a run of equal-size groups.
    """
    candidate = match.group(0)
    if len(candidate) < 8:
        return None  # fewer than the 8 digits any accepted form needs (most candidates: "3", "2024")
    groups = _PHONE_GROUP.findall(candidate)
    digits = "".join(groups)
    after = text[match.end() : match.end() + 2]
    if after[:1] in (":", "/", "%") or (after[:1] == "," and after[1:2].isdigit()) or after[:1].isalpha():
        return None  # a time (10:30), a fraction or path, a percentage, a decimal, a unit or a word
    if _ISBN_BEFORE.search(text, max(0, match.start() - 12), match.start()):
        return None
    if candidate.startswith("+"):
        return "+" + digits if 8 <= len(digits) <= 15 else None
    if not 10 <= len(digits) <= 15:
        return None
    if "(" in candidate and _PHONE_AREA.search(candidate):
        return digits
    if not 2 <= len(groups) <= 5 or _PHONE_DATE.search(candidate) or _PHONE_IPV4.fullmatch(candidate):
        return None
    sizes = [len(g) for g in groups]
    if sizes[-1] == 1 or (len(digits) == 13 and digits[:3] in ("978", "979")):
        return None  # an ISBN: a single check digit at the end, or the 978/979 prefix
    if len(groups) >= 3 and sizes[0] <= 3 and all(size == 3 for size in sizes[1:]):
        return None  # thousands separators: 1 000 000 000, 100 200 300 400
    if len(groups) >= 3 and len(set(sizes)) == 1 and not (sizes[0] == 2 and groups[0].startswith("0")):
        return None  # a run of equal-size numbers (2019 2020 2021, 10 20 30 40 50); 01 23 45 67 89 is a phone
    return digits


def extract_entities(text: str) -> list[dict[str, object]]:
    found: list[tuple[int, str, str]] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, value: str, span: tuple[int, int]) -> None:
        if any(s < span[1] and span[0] < e for s, e in taken):
            return
        taken.append(span)
        found.append((span[0], kind, value))

    # Each pattern needs its character ("@", "#", "$", ...): a text without it skips the scan.
    if _may_have_url(text):
        for match in _URL.finditer(text):
            url, _ = _url_of(text, match)
            add("url", strip_tracking(url), (match.start(), match.start() + len(url)))
    if "@" in text:
        for match in _EMAIL.finditer(text, *_email_span(text)):
            add("email", match.group(0).lower(), match.span())
        for match in _MENTION.finditer(text):
            add("mention", "@" + match.group(1), match.span())
    if "#" in text:
        for match in _HASHTAG.finditer(text):
            add("hashtag", "#" + normalise_hashtag(match.group(1)), match.span())
    if "$" in text:
        for match in _CASHTAG.finditer(text):
            add("cashtag", "$" + match.group(1).upper(), match.span())
    for match in _PHONE.finditer(text):
        phone = _phone_value(text, match)
        if phone:
            add("phone", phone, match.span())
    result: list[dict[str, object]] = []
    seen: set[tuple[str, str]] = set()
    for _, kind, value in sorted(found):
        if (kind, value) not in seen:
            seen.add((kind, value))
            result.append({"type": kind, "value": value, "confidence": 1.0})
    return result


# --- language -----------------------------------------------------------------------------------------

_COMMON_WORDS = {
    "en": "the and is are of to in that for with this on you it was be have not",
    "de": "der die das und ist nicht ein eine mit auf für von sich des dem zu",
    "fr": "le la les et est des une un pour dans que qui pas sur avec du au",
    "es": "el la los las y es de que en un una por para con no del se",
    "it": "il la che e di un una per non sono con del della gli le",
    "pt": "o a os as e de que um uma para com não do da em é",
    "nl": "de het een en van is dat niet op te voor met zijn",
    "pl": "i w nie na się jest że do to z jak co",
    "tr": "ve bir bu da de için ile çok ne ama",
    "ru": "и в не на что это с как по но из у за от так все же",
    "uk": "і в не на що це з як та але для від до все так",
    "bg": "и в не на че това с как за да от се са по",
    "sr": "и у не на да је то се са од за",
}
_WORDS = {lang: frozenset(words.split()) for lang, words in _COMMON_WORDS.items()}
_LETTER = re.compile(r"[^\W\d_]+", re.UNICODE)


def _script(ch: str) -> str | None:
    code = ord(ch)
    if 0x0400 <= code <= 0x04FF:
        return "cyrillic"
    if (ch.isascii() and ch.isalpha()) or 0x00C0 <= code <= 0x024F:
        return "latin"
    if 0x0590 <= code <= 0x05FF:
        return "hebrew"
    if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F:
        return "arabic"
    if 0x0370 <= code <= 0x03FF:
        return "greek"
    if 0x3040 <= code <= 0x30FF:
        return "kana"
    if 0x4E00 <= code <= 0x9FFF:
        return "han"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:
        return "hangul"
    if 0x0900 <= code <= 0x097F:
        return "devanagari"
    if 0x10A0 <= code <= 0x10FF:
        return "georgian"
    if 0x0530 <= code <= 0x058F:
        return "armenian"
    if 0x0E00 <= code <= 0x0E7F:
        return "thai"
    return None


_SCRIPT_LANG = {
    "hebrew": "he", "greek": "el", "hangul": "ko", "devanagari": "hi", "georgian": "ka", "armenian": "hy",
    "thai": "th", "kana": "ja",
}  # fmt: skip


# The same ranges as _script, as regexes: counting with findall runs in C, ~20× faster than per character.
_SCRIPT_PATTERNS = [
    ("cyrillic", re.compile(r"[\u0400-\u04FF]")),
    ("latin", re.compile(r"[A-Za-z\u00C0-\u024F]")),
    ("hebrew", re.compile(r"[\u0590-\u05FF]")),
    ("arabic", re.compile(r"[\u0600-\u06FF\u0750-\u077F]")),
    ("greek", re.compile(r"[\u0370-\u03FF]")),
    ("kana", re.compile(r"[\u3040-\u30FF]")),
    ("han", re.compile(r"[\u4E00-\u9FFF]")),
    ("hangul", re.compile(r"[\uAC00-\uD7AF\u1100-\u11FF]")),
    ("devanagari", re.compile(r"[\u0900-\u097F]")),
    ("georgian", re.compile(r"[\u10A0-\u10FF]")),
    ("armenian", re.compile(r"[\u0530-\u058F]")),
    ("thai", re.compile(r"[\u0E00-\u0E7F]")),
]


# Script counting without a regex pass per script. In UTF-8, Cyrillic (U+0400-04FF) is exactly the
# characters whose first byte is D0-D3, and Latin U+00C0-023F those whose first byte is C3-C8
# (U+0240-024F: C9 80-8F); lead bytes never occur inside another character, so counting bytes counts
# letters, in C and about ten times faster than findall. Texts with any other script take the per-script
# patterns.
_ASCII_LETTERS = bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B))
_LATIN_BYTES = _ASCII_LETTERS + bytes(range(0xC3, 0xC9))
_LATIN_C9 = re.compile(rb"\xc9[\x80-\x8f]")
_OTHER_SCRIPTS = re.compile(
    r"[\u0370-\u03FF\u0530-\u06FF\u0750-\u077F\u0900-\u097F\u0E00-\u0E7F\u10A0-\u11FF\u3040-\u30FF"
    r"\u4E00-\u9FFF\uAC00-\uD7AF]"
)


def _script_counts(text: str) -> dict[str, int]:
    """Characters per script, for the scripts present, in _SCRIPT_PATTERNS order."""
    if text.isascii():
        latin = len(text) - len(text.encode("ascii").translate(None, _ASCII_LETTERS))
        return {"latin": latin} if latin else {}
    if _OTHER_SCRIPTS.search(text):
        return {name: n for name, pattern in _SCRIPT_PATTERNS if (n := len(pattern.findall(text)))}
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate encodes as ED xx xx: not counted
    cyrillic = data.count(b"\xd0") + data.count(b"\xd1") + data.count(b"\xd2") + data.count(b"\xd3")
    latin = len(data) - len(data.translate(None, _LATIN_BYTES))
    if b"\xc9" in data:
        latin += len(_LATIN_C9.findall(data))
    counts: dict[str, int] = {}
    if cyrillic:
        counts["cyrillic"] = cyrillic
    if latin:
        counts["latin"] = latin
    return counts


def _has_any(text: str, chars: str) -> bool:
    return any(ch in text for ch in chars)


def detect_language(text: str) -> str:
    """ISO 639-1 code from the dominant script and, within a script, distinctive letters and common words."""
    without_urls = text or ""
    if _may_have_url(without_urls):
        without_urls = _URL.sub(" ", without_urls)
    if "@" in without_urls:
        start, end = _email_span(without_urls)
        without_urls = without_urls[:start] + _EMAIL.sub(" ", without_urls[start:end]) + without_urls[end:]
        without_urls = _MENTION.sub(" ", without_urls)
    if "#" in without_urls:
        without_urls = _HASHTAG.sub(" ", without_urls)
    scripts = _script_counts(without_urls)
    if not scripts:
        return "und"
    if scripts.get("kana"):
        return "ja"
    # The most frequent script; on a tie the first in _SCRIPT_PATTERNS order (max keeps the first).
    script = max(scripts, key=scripts.__getitem__)
    if script in _SCRIPT_LANG:
        return _SCRIPT_LANG[script]
    if script == "han":
        return "zh"
    if script == "arabic":
        return "fa" if _has_any(without_urls, "پچژگ") else "ar"
    tokens = _LETTER.findall(without_urls.lower() if without_urls.isascii() else without_urls)
    if script == "cyrillic":
        lowered = without_urls.casefold()
        if _has_any(lowered, "їєґ") or ("і" in lowered and not _has_any(lowered, "ыэў")):
            return "uk"
        if "ў" in lowered:
            return "be"
        if _has_any(lowered, "ђћџљњ"):
            return "sr"
        candidates = ("ru", "uk", "bg", "sr")
        if not _has_any(lowered, "ыэё") and "ъ" in lowered:
            return "bg"
        return _best(tokens, candidates, default="ru")
    return _best(
        tokens, ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "tr"), default="en" if tokens else "und"
    )


# Which languages list a word, so a text's words are looked up once each, not once per language.
_WORD_LANGS: dict[str, tuple[str, ...]] = {}
for _lang, _words in _WORDS.items():
    for _word in _words:
        _WORD_LANGS[_word] = (*_WORD_LANGS.get(_word, ()), _lang)
# Case folding never shortens a word, so a longer token cannot be a common word.
_LONGEST_WORD = max(map(len, _WORD_LANGS))


def _best(tokens: list[str], candidates: tuple[str, ...], default: str) -> str:
    """The candidate with most common words among the tokens (case-folded), the first on a tie."""
    scores = dict.fromkeys(candidates, 0)
    for token in tokens:
        if len(token) <= _LONGEST_WORD and (langs := _WORD_LANGS.get(token.casefold())):
            for lang in langs:
                if lang in scores:
                    scores[lang] += 1
    best = max(candidates, key=scores.__getitem__)
    return best if scores[best] > 0 else default


def extract(text: str) -> Extraction:
    """Enrich one message; an empty or media-only message yields an empty clean text."""
    cleaned = clean_text(text)
    return Extraction(
        text_clean=cleaned,
        summary=summarize(cleaned),
        topics=hashtags(text or ""),
        entities=extract_entities(text or ""),
        language=detect_language(cleaned),
    )


# --- the processor ------------------------------------------------------------------------------------

# How the pipeline batches for this processor. A message costs tens of microseconds here, not the second
# of an LLM call, so the database round trips dominate unless each covers many messages: 2,000 per
# claim and per write transaction instead of 256 and 100 (~1.5x the documents/s on PostgreSQL).
# Selection pages are bigger still: right after a bulk import PostgreSQL's statistics are stale and it
# plans the candidate query as a scan of the whole table (~0.3 s at 200,000 messages) instead of a walk
# along the index, so each page costs as much as the table; 10,000 rows a page (~20 MB of short
# messages) keep that under a tenth of the run. Threads: the work is CPU-bound under one GIL, so one
# worker computes while the coordinator waits on the database and a second covers its hand-offs; more
# only contend for the queues' locks (measured: 2 threads ~1.3x the documents/s of 8 on PostgreSQL).
EXTRACTIVE_BATCH = 2000
EXTRACTIVE_PAGE = 10_000
EXTRACTIVE_THREADS = 2


def tune_options(options: ProcessOptions) -> ProcessOptions:
    """Set the pipeline's batch sizes and threads for the extractive processor (`process` and `run`)."""
    options.concurrency = min(options.concurrency, EXTRACTIVE_THREADS)
    options.claim_batch = options.write_batch = EXTRACTIVE_BATCH
    options.page_size = EXTRACTIVE_PAGE
    return options


EXTRACTIVE_MODEL = "extractive"
EXTRACTIVE_PIPELINE_VERSION = "extractive-1"
# Stands where an LLM document has the hash of its prompt: bumped when the extractors change.
EXTRACTIVE_PROMPT_ID = "extractive:1"


class ExtractiveDocumentProcessor:
    """The offline processor: the same surface as the LLM processor, so it runs through the same
    pipeline (selection, leases, batched writes, failure journal, run report)."""

    model = EXTRACTIVE_MODEL
    prompt_id = EXTRACTIVE_PROMPT_ID

    def process(self, message: Any, stop: Any = None) -> ProcessedDocument:
        result = extract(message.get("text") or "")
        if not result.text_clean:
            raise EmptyMessage(message["source_ref"])
        return ProcessedDocument(
            source_ref=message["source_ref"],
            channel_id=message["channel_id"],
            message_date=message["date"],
            text_clean=result.text_clean,
            summary=result.summary or None,
            topics=result.topics,
            entities=result.entities,  # type: ignore[arg-type]
            language=result.language,
            model=EXTRACTIVE_MODEL,
            prompt_id=EXTRACTIVE_PROMPT_ID,
            pipeline_version=EXTRACTIVE_PIPELINE_VERSION,
            input_tokens=0,
            output_tokens=0,
            metadata={"message_type": message.get("message_type")},
        )

    def estimate_input_tokens(self, message: Any) -> int:
        return 0
