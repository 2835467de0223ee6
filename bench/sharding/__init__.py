"""Snapshot sharding behind a real nginx: throughput and memory per server at 1, 2 and 4 shards."""
