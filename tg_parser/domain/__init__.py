from tg_parser.domain.ids import (
    SourceRef,
    doc_id,
    is_source_ref,
    kb_message_id,
    kb_topic_id,
    make_source_ref,
    parse_source_ref,
    topic_id,
)

__all__ = [
    "SourceRef",
    "doc_id",
    "is_source_ref",
    "kb_message_id",
    "kb_topic_id",
    "make_source_ref",
    "parse_source_ref",
    "topic_id",
]
