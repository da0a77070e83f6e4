"""tg-parser: Telegram channels → raw store → LLM-enriched documents → topics → knowledge-base export."""

__version__ = "0.1.0"
