"""The Redis-backed store of projects, conversations and chunks: the one owner of their keys.

Key layout (``P`` is ``settings.redis_key_prefix``; braces are Redis Cluster
hash tags, so every key of one conversation lives in one slot and each state
change is one Lua script, atomic against concurrent requests and consumers)::

    P:projects                      zset   project id -> created ms (host listing)
    P:{p:<project>}                 hash   project fields, each JSON-encoded
    P:{p:<project>}:conversations   zset   conversation id -> created ms
    P:{c:<conv>}                    hash   conversation: id, project_id, title, ...,
                                           is_finished, finished_ms, finish_reason,
                                           open_chunks (listed chunks not yet in an end
                                           state), last_activity_ms, finalized_ms,
                                           is_all_chunks_transcribed, summary,
                                           merged_transcript, final_* (the finalization
                                           claim and generation), summary_*
    P:{c:<conv>}:chunks             zset   listed chunk id -> chunk timestamp ms
    P:{c:<conv>}:chunk:<chunk>      hash   chunk: id, path, status, error, transcript, ...
    P:{c:<conv>}:text               hash   sha256(timestamp, content) -> chunk id
                                           (upload-text de-duplication)
    P:idle                          zset   conversation id -> last activity ms (a hint
                                           for the idle sweeper; the hash is authoritative)

Other packages use :class:`ConversationStore` only; its parts are one module
each: :mod:`storage.store_keys` (names), :mod:`storage.store_core` (client and
scripts), :mod:`storage.projects`, :mod:`storage.conversation_lifecycle`,
:mod:`storage.chunks` (the chunk state machine), :mod:`storage.finalization_state`,
:mod:`storage.summaries`, :mod:`storage.processing_state`,
:mod:`storage.recovery_queries` (the stuck-work sweeper's reads and repair) and
:mod:`storage.project_memo`.
"""

from __future__ import annotations

from storage.chunks import (
    CHUNK_STATES,
    END_STATES,
    ChunkStore,
    ConfirmResult,
    TransitionResult,
)
from storage.conversation_lifecycle import ConversationLifecycle, FinishResult
from storage.finalization_state import FinalizationClaim, FinalizationState
from storage.processing_state import ProcessingState, ProcessingView
from storage.project_memo import PROJECT_OF_MEMO_SIZE
from storage.projects import PROJECT_FIELDS, ProjectStore
from storage.recovery_queries import RecoveryQueries
from storage.store_core import iso_to_ms, ms_to_iso
from storage.store_errors import (
    ChunkKeyMismatch,
    ChunkNotFound,
    ConversationNotFound,
    ProjectClosed,
    ProjectNotFound,
    StoreError,
    WriteLost,
)
from storage.summaries import SummaryDraft, SummaryInputs, SummaryStore


class ConversationStore(
    ProjectStore, ConversationLifecycle, ProcessingView, ChunkStore, FinalizationState, SummaryStore,
    RecoveryQueries,
):
    """Projects, conversations and chunks in Redis; transitions are Lua scripts.

    ``ConversationStore(redis, key_prefix=..., autopipeline=...)``: with an
    auto-pipeline the scripts go over it rather than the pool.
    """


__all__ = [
    "CHUNK_STATES",
    "END_STATES",
    "PROJECT_FIELDS",
    "PROJECT_OF_MEMO_SIZE",
    "ChunkKeyMismatch",
    "ChunkNotFound",
    "ConfirmResult",
    "ConversationNotFound",
    "ConversationStore",
    "FinalizationClaim",
    "FinishResult",
    "ProcessingState",
    "ProjectClosed",
    "ProjectNotFound",
    "StoreError",
    "SummaryDraft",
    "SummaryInputs",
    "TransitionResult",
    "WriteLost",
    "iso_to_ms",
    "ms_to_iso",
]
