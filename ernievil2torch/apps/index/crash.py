"""Named points where a test kills the indexer (SIGKILL, nothing flushed or cleaned up), to prove that a re-run
completes the index exactly.

Set ``ERNIEVIL2_INDEX_CRASH_AT=NAME`` (or ``NAME:N`` for its N-th passage, counting from 1) in the environment of
an ``index`` run; unset (always, outside tests) a crash point costs one dictionary lookup. Points:

* ``batch-written``: after a batch of rows was written (``:2``: mid-run, after the second batch);
* ``before-changed-write``: a batch holding changed files is embedded, their old rows still in place;
* ``before-removals``: every new row is written, rows of deleted and moved-away files are not yet removed;
* ``reindex-before-drop``: ``--reindex`` moved the alias to the new collection, the old one is not yet dropped;
* ``bulk-batch-written``: ``--from_embeddings`` wrote a batch of rows (``:2``: after the second batch).
"""
from __future__ import annotations

import os
import signal
from typing import Dict

ENV = "ERNIEVIL2_INDEX_CRASH_AT"
POINTS = ("batch-written", "before-changed-write", "before-removals", "reindex-before-drop", "bulk-batch-written")
_passages: Dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if the environment names this point (and this is its chosen passage)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _passages[name] = _passages.get(name, 0) + 1
    if _passages[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
