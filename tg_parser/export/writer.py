"""The knowledge-base export: kb_entries.ndjson, topics.json and topic_<id>.json (DESIGN.md §7).

Rows stream from the database straight into the NDJSON file (memory stays flat whatever the channel
size); only topic membership and the few documents that topics cite are held in memory. Every file is
written to a temporary name and renamed into place at the end, so a reader never sees half an export,
and the output is deterministic: the same database gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.codec import format_timestamp
from tg_parser.domain.ids import kb_topic_id
from tg_parser.errors import TgParserError
from tg_parser.export import parallel
from tg_parser.export.links import channel_link, message_path
from tg_parser.stores.base import FAR_FUTURE, FAR_PAST
from tg_parser.stores.export import ExportKey, ExportStore

TITLE_MAX = 120
_FOLDER_HINT = "check that --out names a folder you can write to"


class ExportError(TgParserError):
    """The export could not be written (folder missing, not writable, disk full)."""


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass
class ExportFilters:
    channel_id: int | None = None
    topic_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class ExportResult:
    out_dir: Path
    message_entries: int = 0
    topic_entries: int = 0
    topic_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "message_entries": self.message_entries,
            "topic_entries": self.topic_entries,
            "topic_files": len(self.topic_files),
            "removed_stale_topic_files": self.removed_files,
        }


def make_title(summary: str | None, text: str) -> str:
    """The first sentence of the summary (or of the text), cut at a word boundary."""
    source = (summary or "").strip() or text.strip()
    end = _SENTENCE_END.search(source)
    first = " ".join((source[: end.start()] if end else source).split())
    return (first if len(first) <= TITLE_MAX else _cut_title(first)) or "(untitled)"


def _cut_title(first: str) -> str:
    """A first sentence longer than TITLE_MAX, cut at a word boundary."""
    cut = first[:TITLE_MAX].rsplit(" ", 1)[0] or first[:TITLE_MAX]
    return cut.rstrip(",;:-–— ") + "…"


def topic_file_name(topic_id: str) -> str:
    return "topic_" + re.sub(r"[^A-Za-z0-9_.-]", "_", topic_id.removeprefix("topic:")) + ".json"


def _line(value: Any) -> bytes:
    # orjson: compact UTF-8 like json.dumps(ensure_ascii=False, separators=(",", ":")), several times faster,
    # written as bytes (no decode/encode round trip per line).
    return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)


class _AtomicFiles:
    """Temp files in the target folder, renamed into place only when everything was written."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.pending: list[tuple[Path, Path]] = []
        self.scratches: list[Path] = []

    def open(self, name: str, *, binary: bool = False) -> Any:
        final = self.out_dir / name
        temp = self._temp_name(name)
        self.pending.append((temp, final))
        if binary:
            return temp.open("wb", buffering=1 << 20)
        return temp.open("w", encoding="utf-8", newline="\n")

    def scratch(self, name: str) -> Path:
        """A temporary file beside the others that is never renamed into place: removed at the end."""
        temp = self._temp_name(name)
        self.scratches.append(temp)
        return temp

    def _temp_name(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"

    def commit(self) -> None:
        for temp, final in self.pending:
            os.replace(temp, final)
        self.pending.clear()
        self._clear_scratches()

    def abort(self) -> None:
        for temp, _ in self.pending:
            temp.unlink(missing_ok=True)
        self.pending.clear()
        self._clear_scratches()

    def _clear_scratches(self) -> None:
        for temp in self.scratches:
            temp.unlink(missing_ok=True)
        self.scratches.clear()


def export(
    db: Database,
    out_dir: Path,
    filters: ExportFilters | None = None,
    on_entry: Callable[[], None] | None = None,
    *,
    jobs: int | None = 1,
    settings: Settings | None = None,
    documents: int | None = None,
) -> ExportResult:
    """Write the export into `out_dir`. With `jobs` > 1 (None: `parallel.auto_jobs` decides) and the
    `settings` `db` was opened with, the message entries are written by that many processes
    (export/parallel.py); the files are the same bytes either way. Inside a transaction the export runs
    in one process (helpers would not see its writes). `documents` is `count_documents(db, filters)`
    when the caller already counted them (for a progress bar): the split is decided on that count
    instead of counting again."""
    filters = filters or ExportFilters()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot create the export folder {out_dir}: {exc.strerror or exc}", _FOLDER_HINT
        ) from None
    result = ExportResult(out_dir=out_dir)
    # Stale topic files are the ones the previous export listed and this one does not write; files
    # tg-parser did not write are never touched.
    previous_files = _listed_topic_files(out_dir / "topics.json")

    plan = _plan(ExportStore(db), filters)
    docs_for_topics: dict[str, dict[str, Any]] = {}
    files = _AtomicFiles(out_dir)
    try:
        with files.open("kb_entries.ndjson", binary=True) as ndjson:
            split = _split(plan, filters, jobs, settings, files, documents)
            result.message_entries, exported_cards = _write_kb(
                plan, ndjson, filters, docs_for_topics, on_entry, split
            )
            result.topic_entries = len(exported_cards)
        bundles = plan.bundles
        with files.open("topics.json") as handle:
            listing = [_topic_listing(card, bundles.get(card["topic_id"])) for card in exported_cards]
            handle.write(json.dumps({"topics": listing}, ensure_ascii=False, indent=2) + "\n")
        for card in exported_cards:
            name = topic_file_name(card["topic_id"])
            with files.open(name) as handle:
                document = _topic_file(card, bundles.get(card["topic_id"]), docs_for_topics)
                handle.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
            result.topic_files.append(name)
        files.commit()
    except OSError as exc:
        files.abort()
        raise ExportError(
            f"cannot write the export to {out_dir}: {exc.strerror or exc}", _FOLDER_HINT
        ) from None
    except BaseException:
        files.abort()
        raise
    if filters.topic_id is None:
        keep = set(result.topic_files)
        for name in previous_files:
            if name not in keep and (out_dir / name).is_file():
                (out_dir / name).unlink()
                result.removed_files.append(name)
    return result


@dataclass
class _Plan:
    """What the export decides before it streams: link bases, the topics it writes and who cites what."""

    store: ExportStore
    usernames: dict[int, str]
    cards: list[dict[str, Any]]
    bundles: dict[str, dict[str, Any]]
    membership: dict[str, list[str]]
    allowed: set[str] | None
    cited: set[str]


def _plan(store: ExportStore, filters: ExportFilters) -> _Plan:
    usernames = store.channel_usernames()
    cards = [c for c in store.topic_cards() if _topic_selected(c, filters)]
    bundles = store.topic_bundles()
    # A topic is exported when one of its anchors is: decided up front, so every topic id a message
    # entry names has its own topic entry and file in the same export.
    anchor_refs = sorted({a["source_ref"] for c in cards for a in c["anchors"]})
    in_window = {row["source_ref"] for row in store.document_dates(anchor_refs) if _in_window(row, filters)}
    cards = [c for c in cards if any(a["source_ref"] in in_window for a in c["anchors"])]
    membership: dict[str, list[str]] = {}
    cited: set[str] = set()
    for card in cards:
        refs = [a["source_ref"] for a in card["anchors"]]
        refs += [i["source_ref"] for i in bundles.get(card["topic_id"], {}).get("items", [])]
        for ref in dict.fromkeys(refs):
            membership.setdefault(ref, []).append(card["topic_id"])
            cited.add(ref)
    allowed = cited if filters.topic_id else None
    return _Plan(store, usernames, cards, bundles, membership, allowed, cited)


@dataclass
class _Split:
    """The export cut into len(keys) + 1 ranges, written by that many processes."""

    keys: list[ExportKey]
    settings: Settings
    files: _AtomicFiles


def count_documents(db: Database, filters: ExportFilters | None = None) -> int:
    """The documents in the export's window (its channel and [since, until) filters): the message entries
    an export without a topic filter writes (with one, at most that many)."""
    return ExportStore(db).count_documents(*_window(filters or ExportFilters()))


def _window(filters: ExportFilters) -> tuple[int | None, datetime, datetime]:
    return (filters.channel_id, filters.since or FAR_PAST, filters.until or FAR_FUTURE)


def _split(
    plan: _Plan,
    filters: ExportFilters,
    jobs: int | None,
    settings: Settings | None,
    files: _AtomicFiles,
    documents: int | None,
) -> _Split | None:
    if jobs == 1 or settings is None or plan.store.db.in_transaction:
        return None
    window = _window(filters)
    if documents is None:
        documents = plan.store.count_documents(*window)
    jobs = parallel.auto_jobs(documents) if jobs is None else jobs
    if jobs == 1:
        return None
    extra = parallel.head_start(documents, jobs)
    keys = plan.store.split_keys(*window, parts=jobs, documents=documents, first_extra=extra)
    return _Split(keys, settings, files) if keys else None


def _write_kb(
    plan: _Plan,
    out: BinaryIO,
    filters: ExportFilters,
    docs_for_topics: dict[str, dict[str, Any]],
    on_entry: Callable[[], None] | None = None,
    split: _Split | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Write the knowledge-base entries (messages, then the topics they cite); returns the message
    count and the topic cards written."""
    context = parallel.EntryContext(filters, plan.usernames, plan.membership, plan.allowed, plan.cited)
    if split is None:
        count = _write_part(plan.store, out, context, None, None, docs_for_topics, on_entry)
    else:
        count = parallel.write_parts(
            plan.store,
            out,
            context,
            split.keys,
            settings=split.settings,
            spool=lambda index: split.files.scratch(f"kb_entries.ndjson.part{index}"),
            write_part=_write_part,
            docs_for_topics=docs_for_topics,
            on_entry=on_entry,
        )
    exported_cards = [c for c in plan.cards if any(a["source_ref"] in docs_for_topics for a in c["anchors"])]
    for card in exported_cards:
        out.write(_line(_topic_entry(card, plan.bundles.get(card["topic_id"]), docs_for_topics)))
    return count, exported_cards


def write_kb_entries(db: Database, out: BinaryIO, filters: ExportFilters | None = None) -> tuple[int, int]:
    """Write exactly the `kb_entries.ndjson` records `export` writes (same filters, same order) to `out`,
    streaming; returns (message entries, topic entries). The HTTP API streams its export with it."""
    filters = filters or ExportFilters()
    count, cards = _write_kb(_plan(ExportStore(db), filters), out, filters, {})
    return count, len(cards)


def _listed_topic_files(path: Path) -> list[str]:
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
        names = [t["file"] for t in listing.get("topics", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and re.fullmatch(r"topic_[A-Za-z0-9_.-]+\.json", n)]


def _in_window(row: dict[str, Any], filters: ExportFilters) -> bool:
    if filters.channel_id is not None and int(row["channel_id"]) != filters.channel_id:
        return False
    date = row["message_date"]
    return (filters.since is None or date >= filters.since) and (
        filters.until is None or date < filters.until
    )


def _topic_selected(card: dict[str, Any], filters: ExportFilters) -> bool:
    if filters.topic_id is not None and card["topic_id"] != filters.topic_id:
        return False
    return filters.channel_id is None or int(card["channel_id"]) == filters.channel_id


# How many distinct JSON texts a `_JsonColumn` remembers before it starts over (a bound on its memory:
# values are a few hundred bytes, so a few MB at most).
_JSON_CACHE_MAX = 8192
# A column whose values repeat less than this (misses over the entries of a batch) is parsed per entry
# instead: a miss costs about 1 us more than parsing (the compact print, the Fragment, the insert) and a
# hit saves about 0.4 us, so below ~70% hits the cache costs more than it saves.
_JSON_MISS_RATIO_MAX = 0.25
# Within a batch, the misses remembered at most (a quarter of the stream's 2,000-row batches): past it the
# batch's other new values are only parsed, so a column whose values do not repeat pays little before
# `review` turns remembering off.
_JSON_MISSES_PER_BATCH = 500
# Batches a column goes without remembering before it is tried again (its values may start to repeat);
# doubled after every try that did not pay, up to _JSON_RETRY_MAX, so values that never repeat cost a
# few batches' misses over a whole export.
_JSON_RETRY_BATCHES = 16
_JSON_RETRY_MAX = 1024


def _json_value(value: str) -> Any:
    """jsonb's text parsed for orjson to print compact inside the entry. The stdlib parser takes what
    orjson refuses (a number beyond a double, which jsonb's numeric holds), as the driver's jsonb
    loader does; parsing here rather than in that loader saves two Python calls per value."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value)


class _JsonColumn:
    """One JSON column of the stream query (topics or entities) on PostgreSQL, as orjson embeds it:
    `render(text)`.

    The column is jsonb's rendering (spaces after separators, keys in jsonb's order), which orjson must
    print compact (on SQLite it is the stored compact text, which the loop wraps in a Fragment as it
    is). Where values repeat (topic lists come from a small vocabulary), each distinct text is parsed
    and printed once into a Fragment and remembered, so a repeat costs a dict lookup. Where they do not
    (entity lists are often unique to a message), remembering costs more than it saves: `review`, after
    every batch, switches `render` to parsing every value (`_json_value`; the entry's print does the
    rest, as before) and tries remembering again _JSON_RETRY_BATCHES batches later (twice as many
    after each try that did not pay). The entry's bytes are the same either way. A value orjson cannot
    parse is handed back as the stdlib parses it, never remembered.
    """

    def __init__(self) -> None:
        self.known: dict[str, Any] = {}
        self.misses = 0
        self.resting = 0  # batches left before remembering is tried again
        self.rest = _JSON_RETRY_BATCHES  # how long the next rest is
        get, remember = self.known.get, self._remember

        def cached(value: str) -> Any:
            return get(value) or remember(value)

        self._cached = cached
        self.render: Callable[[str], Any] = cached

    @property
    def caching(self) -> bool:
        return self.render is self._cached

    def _remember(self, value: str) -> Any:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return json.loads(value)
        if self.misses >= _JSON_MISSES_PER_BATCH:
            return parsed
        self.misses += 1
        rendered = orjson.Fragment(orjson.dumps(parsed))
        if len(self.known) >= _JSON_CACHE_MAX:
            self.known.clear()
        self.known[value] = rendered
        return rendered

    def review(self, entries: int) -> None:
        """After a batch of `entries` entries: remember values only where it paid."""
        if self.caching:
            if self.misses > entries * _JSON_MISS_RATIO_MAX or self.misses >= _JSON_MISSES_PER_BATCH:
                self.render, self.resting = _json_value, self.rest
                self.rest = min(self.rest * 2, _JSON_RETRY_MAX)
            else:
                self.rest = _JSON_RETRY_BATCHES
        else:
            self.resting -= 1
            if self.resting <= 0:
                self.render = self._cached
        self.misses = 0


def _write_part(
    store: ExportStore,
    out: BinaryIO,
    context: parallel.EntryContext,
    after: ExportKey | None,
    upto: ExportKey | None,
    docs_for_topics: dict[str, dict[str, Any]],
    on_entry: Callable[[], None] | None,
) -> int:
    """The message entries of one range of the export's order (all of it with no bounds)."""
    return _write_message_entries(
        store,
        out,
        context.filters,
        context.usernames,
        context.membership,
        context.allowed,
        context.cited,
        docs_for_topics,
        on_entry,
        after=after,
        upto=upto,
    )


def _write_message_entries(
    store: ExportStore,
    out: BinaryIO,
    filters: ExportFilters,
    usernames: dict[int, str],
    membership: dict[str, list[str]],
    allowed: set[str] | None,
    cited: set[str],
    docs_for_topics: dict[str, dict[str, Any]],
    on_entry: Callable[[], None] | None,
    *,
    after: ExportKey | None = None,
    upto: ExportKey | None = None,
) -> int:
    """Stream the message entries into `out` (those after `after` up to `upto`, when given); returns
    how many were written.

    The hot path of the export, so it is written for speed: rows arrive as tuples a batch at a time
    (no dict per row), every name the loop uses is local, a channel's link base is built once, and each
    entry is one dict serialised by orjson into one write. The query's column order is the unpacking
    order below.
    """
    batches = store.document_batches(
        filters.channel_id, filters.since or FAR_PAST, filters.until or FAR_FUTURE, after=after, upto=upto
    )
    dumps, newline, fragment = orjson.dumps, orjson.OPT_APPEND_NEWLINE, orjson.Fragment
    write, link_in, sentence_end = out.write, message_path, _SENTENCE_END.search
    topics_json, entities_json = _JsonColumn(), _JsonColumn()
    no_topics: list[str] = []
    topic_ids_of = {ref: sorted(ids) for ref, ids in membership.items()}
    # Rows come in channel order: a channel's username and link base are looked up when it changes.
    channel, username, base = None, None, ""
    count = 0
    with closing(batches):
        for batch in batches:
            first, topics_of, entities_of = count, topics_json.render, entities_json.render
            for (
                ref,
                channel_id,
                message_date,
                processed_at,
                text,
                summary,
                topics,
                entities,
                language,
                model,
                prompt_id,
                pipeline_version,
                message_type,
                message_id,
                thread_id,
                parent_message_id,
                views,
                forwards,
                replies,
                media_type,
                edit_date,
                source_id,
            ) in batch:
                if allowed is not None and ref not in allowed:
                    continue
                if channel_id != channel:
                    channel, username = channel_id, usernames.get(channel_id)
                    base = channel_link(channel_id, username)
                url = base + (
                    f"/{message_id}"
                    if message_type != "comment"
                    else link_in(message_type, message_id, thread_id)
                )
                # make_title and the content rule, inlined (the loop's largest share after orjson):
                # each side stripped once.
                summary = summary or ""
                stripped, text_stripped = summary.strip(), text.strip()
                head = stripped or text_stripped
                end = sentence_end(head)
                title = " ".join((head[: end.start()] if end else head).split())
                title = (title if len(title) <= TITLE_MAX else _cut_title(title)) or "(untitled)"
                write(
                    dumps(
                        {
                            # The ref comes from the database: built, not re-validated.
                            "id": "kb:msg:" + ref,
                            "type": "message",
                            "source_ref": ref,
                            "channel_id": channel_id,
                            "channel_username": username,
                            "message_type": message_type,
                            "message_id": message_id,
                            "title": title,
                            "content": f"{summary}\n\n{text}"
                            if summary and stripped != text_stripped
                            else text,
                            "summary": summary,
                            "topics": fragment(topics) if type(topics) is bytes else topics_of(topics),
                            "topic_ids": topic_ids_of.get(ref, no_topics),
                            "entities": fragment(entities)
                            if type(entities) is bytes
                            else entities_of(entities),
                            "language": language or "und",
                            "url": url,
                            "message_date": message_date,
                            "metadata": {
                                "model": model,
                                "prompt_id": prompt_id,
                                "pipeline_version": pipeline_version,
                                "processed_at": processed_at,
                                "edit_date": edit_date,
                                "thread_id": thread_id,
                                "parent_message_id": parent_message_id,
                                "views": views,
                                "forwards": forwards,
                                "replies": replies,
                                "media_type": media_type,
                                "source_id": source_id,
                            },
                        },
                        option=newline,
                    )
                )
                count += 1
                if ref in cited:
                    docs_for_topics[ref] = {
                        "url": url,
                        "title": title,
                        "summary": summary,
                        "message_date": message_date,
                    }
                if on_entry:
                    on_entry()
            topics_json.review(count - first)
            entities_json.review(count - first)
    return count


def _refs(items: list[dict[str, Any]], docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"source_ref": i["source_ref"], "score": i["score"], "url": docs[i["source_ref"]]["url"]}
        for i in items
        if i["source_ref"] in docs
    ]


def _topic_entry(
    card: dict[str, Any], bundle: dict[str, Any] | None, docs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    anchors = _refs(card["anchors"], docs)
    supporting = _refs((bundle or {}).get("items", []), docs)
    summary = card["summary"] or ""
    lines = [card["title"], "", summary] if summary else [card["title"]]
    lines += ["", "Sources:"] + [f"- {docs[a['source_ref']]['title']} ({a['url']})" for a in anchors]
    return {
        "id": kb_topic_id(card["topic_id"]),
        "type": "topic",
        "topic_id": card["topic_id"],
        "channel_id": int(card["channel_id"]),
        "title": card["title"],
        "content": "\n".join(lines).strip(),
        "summary": summary,
        "kind": card["kind"],
        "tags": list(card["tags"] or []),
        "anchors": anchors,
        "supporting": supporting,
        "url": anchors[0]["url"],
        "updated_at": format_timestamp(card["updated_at"]),
    }


def _topic_listing(card: dict[str, Any], bundle: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "topic_id": card["topic_id"],
        "channel_id": int(card["channel_id"]),
        "title": card["title"],
        "summary": card["summary"] or "",
        "kind": card["kind"],
        "tags": list(card["tags"] or []),
        "anchors": [a["source_ref"] for a in card["anchors"]],
        "supporting_count": len((bundle or {}).get("items", [])),
        "file": topic_file_name(card["topic_id"]),
    }


def _topic_file(
    card: dict[str, Any], bundle: dict[str, Any] | None, docs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    sources = []
    for role, items in (("anchor", card["anchors"]), ("supporting", (bundle or {}).get("items", []))):
        for item in items:
            doc = docs.get(item["source_ref"])
            if doc is None:
                continue
            sources.append({"source_ref": item["source_ref"], "role": role, "score": item["score"], **doc})
    return {
        "topic_id": card["topic_id"],
        "card": {
            "topic_id": card["topic_id"],
            "channel_id": int(card["channel_id"]),
            "title": card["title"],
            "summary": card["summary"] or "",
            "kind": card["kind"],
            "tags": list(card["tags"] or []),
            "anchors": [{"source_ref": a["source_ref"], "score": a["score"]} for a in card["anchors"]],
            "model": card["model"],
            "prompt_id": card["prompt_id"],
            "updated_at": format_timestamp(card["updated_at"]),
        },
        "bundle": {
            "items": [
                {"source_ref": i["source_ref"], "score": i["score"], "reason": i.get("reason")}
                for i in (bundle or {}).get("items", [])
            ]
        },
        "sources": sources,
    }
