"""Runs only this shard's share of the suite when hwsched shards the task.

hwsched tells each shard its place in HWSCHED_SHARD_INDEX and HWSCHED_SHARD_TOTAL;
test i of the collected (sorted) list belongs to shard i mod total.
"""

import os


def pytest_collection_modifyitems(config, items):
    total = int(os.environ.get("HWSCHED_SHARD_TOTAL", "1") or 1)
    index = int(os.environ.get("HWSCHED_SHARD_INDEX", "0") or 0)
    if total <= 1:
        return
    items.sort(key=lambda item: item.nodeid)
    keep = [item for i, item in enumerate(items) if i % total == index]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
