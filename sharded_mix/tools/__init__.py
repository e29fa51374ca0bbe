"""Offline commands behind ``sharded-mix``: prepare, demo, link, merge, inspect, evaluate, checkpoints, fake shards."""
