"""Extractive language detection: ISO 639-1 from the script and common words, or "und"."""

from __future__ import annotations

import re

from tg_parser.processing.extractive.cleaning import URL, may_have_url
from tg_parser.processing.extractive.entities import EMAIL, HASHTAG, MENTION, email_span

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
    if may_have_url(without_urls):
        without_urls = URL.sub(" ", without_urls)
    if "@" in without_urls:
        start, end = email_span(without_urls)
        without_urls = without_urls[:start] + EMAIL.sub(" ", without_urls[start:end]) + without_urls[end:]
        without_urls = MENTION.sub(" ", without_urls)
    if "#" in without_urls:
        without_urls = HASHTAG.sub(" ", without_urls)
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
