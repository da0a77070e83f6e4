"""Extractive entities: URLs, @mentions, hashtags, e-mails, phone numbers and cashtags found in the text
(confidence 1.0), and the hashtags that become a document's topics."""

from __future__ import annotations

import re
import unicodedata

from tg_parser.processing.extractive.cleaning import URL, may_have_url, strip_tracking, url_of

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


def email_span(text: str) -> tuple[int, int]:
    """Where EMAIL can match in a text holding "@": from the word of the first "@" to the end of the
    word of the last one (words split at " " and newline). An address is one run of [\\w.+-] characters,
    "@" and [A-Za-z0-9.-] characters, so it never crosses a space or newline; and as both bounds sit
    next to one (or at an end of the text), the lookbehind and the closing \\b see the same thing there
    as in the whole text. EMAIL's leading lookbehind keeps the engine from skipping ahead, so
    scanning only this span is what makes a long message with one @mention cheap."""
    first, last = text.index("@"), text.rindex("@")
    start = max(text.rfind(" ", 0, first), text.rfind("\n", 0, first)) + 1
    ends = [i for i in (text.find(" ", last), text.find("\n", last)) if i >= 0]
    return start, min(ends, default=len(text))


# Patterns that begin with a literal check the character before it *after* the literal ("#(?<![\w#&/]#)"
# rather than "(?<![\w#&/])#"): the same matches, but the regex engine can jump from one "#" to the next
# instead of evaluating the lookbehind at every position (~10x faster on long texts).
MENTION = re.compile(r"@(?<![\w@./]@)([A-Za-z][A-Za-z0-9_]{3,31})\b")
HASHTAG = re.compile(r"#(?<![\w#&/]#)(\w*[^\W\d]\w*)", re.UNICODE)
_CASHTAG = re.compile(r"\$(?<![\w$]\$)([A-Za-z]{1,6})(?![\w])")
# Phone candidates: digit groups joined by one separator (space, hyphen/dash or dot, optionally spaced),
# with an optional leading + and parenthesised area code. Groups after the first need two or more
# digits, so a phone followed by a count ("555-35-35 2 times") does not swallow it. Whether a
# candidate is a phone is decided by _phone_value, never by the regex alone.
_PHONE_SEP = r"(?:[ \u00a0]?[-.\u2010-\u2013][ \u00a0]?|[ \u00a0])"
# "(?<![\w+])\+?(?:\(\d{1,5}\)|\d+)" written to start with the class of its first character ("+", "("
# or a digit; see HASHTAG for the lookbehind after it), then the branch that character allows.
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


def normalise_hashtag(tag: str) -> str:
    return unicodedata.normalize("NFC", tag).casefold().strip("_")


def hashtags(text: str) -> list[str]:
    seen: dict[str, None] = {}
    if "#" not in text:
        return []
    for match in HASHTAG.finditer(text):
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
    if may_have_url(text):
        for match in URL.finditer(text):
            url, _ = url_of(text, match)
            add("url", strip_tracking(url), (match.start(), match.start() + len(url)))
    if "@" in text:
        for match in EMAIL.finditer(text, *email_span(text)):
            add("email", match.group(0).lower(), match.span())
        for match in MENTION.finditer(text):
            add("mention", "@" + match.group(1), match.span())
    if "#" in text:
        for match in HASHTAG.finditer(text):
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
