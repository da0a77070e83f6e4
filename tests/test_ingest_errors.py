"""Failure classification is by exception type (never by message text), and backoff is capped and jittered."""

from __future__ import annotations

import random

import pytest
from telethon import errors as tg_errors

from tg_parser.backoff import Backoff
from tg_parser.ingestion.errors import (
    ChannelNotFound,
    ConnectionLost,
    ErrorKind,
    NotLoggedIn,
    TelegramUnavailable,
    classify,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (tg_errors.FloodWaitError(None, capture=42), ErrorKind.RATE_LIMIT),
        (tg_errors.FloodPremiumWaitError(None, capture=5), ErrorKind.RATE_LIMIT),
        (tg_errors.SlowModeWaitError(None, capture=5), ErrorKind.RATE_LIMIT),
        (tg_errors.FloodError(None, "FLOOD", 420), ErrorKind.RETRYABLE),
        (tg_errors.ServerError(None, "INTERNAL", 500), ErrorKind.RETRYABLE),
        (tg_errors.RpcCallFailError(None), ErrorKind.RETRYABLE),
        (tg_errors.TimedOutError(None, "Timeout", -503), ErrorKind.RETRYABLE),
        (ConnectionResetError("reset"), ErrorKind.RETRYABLE),
        (TimeoutError(), ErrorKind.RETRYABLE),
        (tg_errors.InvalidBufferError(b"\x6c\xfe\xff\xff"), ErrorKind.AUTH),  # transport -404
        (tg_errors.AuthKeyUnregisteredError(None), ErrorKind.AUTH),
        (tg_errors.SessionRevokedError(None), ErrorKind.AUTH),
        (tg_errors.AuthKeyDuplicatedError(None), ErrorKind.AUTH),
        (tg_errors.AuthKeyPermEmptyError(None), ErrorKind.AUTH),  # a 401
        # Every 406 is an AuthKeyError to Telethon; only AUTH_KEY_DUPLICATED means the session is dead.
        (tg_errors.FilerefUpgradeNeededError(None), ErrorKind.PERMANENT),
        (tg_errors.AuthKeyError(None, "SOMETHING_NEW", 406), ErrorKind.PERMANENT),
        (ConnectionLost("lost"), ErrorKind.UNAVAILABLE),
        (TelegramUnavailable("down"), ErrorKind.UNAVAILABLE),
        (NotLoggedIn("x"), ErrorKind.AUTH),
        (tg_errors.ChannelPrivateError(None), ErrorKind.PERMANENT),
        (tg_errors.ChannelInvalidError(None), ErrorKind.PERMANENT),
        (tg_errors.UsernameInvalidError(None), ErrorKind.PERMANENT),
        (tg_errors.UsernameNotOccupiedError(None), ErrorKind.PERMANENT),
        (ChannelNotFound("x"), ErrorKind.PERMANENT),
        (tg_errors.MsgIdInvalidError(None), ErrorKind.NO_THREAD),
        (KeyError("bug"), ErrorKind.UNEXPECTED),
    ],
)
def test_classified_by_type(error, kind):
    assert classify(error).kind is kind


def test_flood_wait_carries_its_seconds_and_message_text_is_ignored():
    assert classify(tg_errors.FloodWaitError(None, capture=3600)).seconds == 3600
    assert classify(tg_errors.FloodWaitError(None, capture=0)).seconds == 1
    lookalike = RuntimeError("A wait of 30 seconds is required (FLOOD_WAIT_30) CHANNEL_PRIVATE")
    assert classify(lookalike).kind is ErrorKind.UNEXPECTED


def test_backoff_is_exponential_capped_and_jittered():
    backoff = Backoff(base=1.0, cap=10.0)
    rng = random.Random(3)
    delays = [backoff.delay(n, rng) for n in range(8)]
    for n, delay in enumerate(delays):
        ceiling = min(10.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[4:]}) > 1  # jitter: capped waits still differ


def test_llm_retries_use_the_same_backoff_with_a_narrower_jitter():
    from tg_parser.config import load_settings
    from tg_parser.llm.client import MAX_BACKOFF, LlmClient, LlmConfig

    settings = load_settings(_env_file=None, openai_base_url="http://127.0.0.1:9/v1")
    client = LlmClient(LlmConfig.from_settings(settings), backoff_base=0.5)
    try:
        assert isinstance(client.backoff, Backoff) and client.backoff.cap == MAX_BACKOFF
        for attempt in range(10):
            ceiling = min(MAX_BACKOFF, 0.5 * 2**attempt)
            assert 0.75 * ceiling <= client._backoff(attempt) <= ceiling
    finally:
        client.close()
