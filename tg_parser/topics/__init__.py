"""Topicization: group a channel's documents into topic cards (anchors) and bundles (supporting items)."""
