"""Extractive cleaning: markup removed, URLs kept without tracking parameters, whitespace, repeated
emoji and punctuation normalised (`clean_text`), and the first-sentence summary (`summarize`)."""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
URL = re.compile(
    r"[hHwW](?:(?<=[hH])[tT][tT][pP][sSſ]?://|(?<=[wW])[wW][wW]\.)"
    r"[^\s<>\"'«»()\[\]{}]+(?:\([^\s()]*\)[^\s<>\"'«»()\[\]{}]*)*"
)
_TRAILING = ".,;:!?…)»\"'"
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
# marker (see HASHTAG).
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


def may_have_url(text: str) -> bool:
    """False when URL cannot match (no "://" and no "www." in any case): the common text skips the pass."""
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
    if not may_have_url(text):
        return urls
    for match in URL.finditer(text):
        url, _ = url_of(text, match)
        if url:
            urls.append(url)
    return urls


def _is_emoji(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF


_REPEATED_VS16 = re.compile("\ufe0f{2,}")


_EMOJI_RUN: re.Pattern[str] | None = None
_EMOJI_RUN_LOCK = threading.Lock()  # the coordinator's worker threads may all ask for it at once


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
    if not may_have_url(text):
        return text
    return URL.sub(lambda m: (lambda u, t: strip_tracking(u) + t)(*_split_url(m.group(0))), text)


def url_of(text: str, match: re.Match[str]) -> tuple[str, str]:
    """The URL of a URL match (as written) and the text after it that the pattern took but that is not
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
        url, rest = url_of(text, match)
        return protected.hide(strip_tracking(url)) + rest

    return URL.sub(replace, text)


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
    if may_have_url(value):
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
