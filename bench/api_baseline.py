"""The baseline bench_api.py compares against: a bare FastAPI + psycopg_pool app (no auth, no limits,
no middleware) answering the same keyset page query on the same data, serialised with orjson.

    uvicorn --factory bench.api_baseline:create_app --workers 2   (BENCH_DSN names the database)
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import orjson
from fastapi import FastAPI
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from starlette.responses import Response

PAGE = """
SELECT d.source_ref, d.id, d.channel_id, d.message_date, d.processed_at, d.text_clean, d.summary, d.topics,
       d.entities, d.language, d.model, d.prompt_id, d.pipeline_version, d.input_tokens, d.output_tokens
FROM processing.processed_documents AS d
WHERE (d.channel_id, d.message_date, d.source_ref) > (%(c)s, %(d)s, %(r)s)
ORDER BY d.channel_id, d.message_date, d.source_ref
LIMIT %(limit)s
"""
TOPICS = "SELECT * FROM processing.topic_cards WHERE topic_id > %(after)s ORDER BY topic_id LIMIT %(limit)s"


def create_app() -> FastAPI:
    pool = ConnectionPool(
        os.environ["BENCH_DSN"], min_size=1, max_size=10, kwargs={"row_factory": dict_row}, open=True
    )
    app = FastAPI()

    def rows(query: str, params: dict) -> list[dict]:
        with pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    @app.get("/documents")
    def documents(limit: int = 100, channel: int = -(2**63), after: str = "") -> Response:
        start = datetime(1970, 1, 1, tzinfo=UTC) if not after else datetime.fromisoformat(after.split("|")[0])
        ref = after.split("|")[1] if after else ""
        page = rows(PAGE, {"c": channel, "d": start, "r": ref, "limit": limit})
        return Response(orjson.dumps({"items": page}, option=orjson.OPT_UTC_Z), media_type="application/json")

    @app.get("/topics")
    def topics(limit: int = 100) -> Response:
        page = rows(TOPICS, {"after": "", "limit": limit})
        return Response(orjson.dumps({"items": page}, option=orjson.OPT_UTC_Z), media_type="application/json")

    @app.get("/ready")
    def ready() -> Response:
        rows("SELECT 1 AS ok", {})
        return Response(b'{"ready":true}', media_type="application/json")

    return app
