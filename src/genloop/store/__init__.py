"""The workspace's memory: rows in one database (SQLite or PostgreSQL) and files written atomically.

Stores bytes, paths and JSON only; it never imports torch or the model families.
"""

from genloop.store.access import KEY_NAME_RULE, AccessRecords, validate_key_name
from genloop.store.db import (
    FEEDBACK_KINDS,
    RUN_STATUSES,
    ApiKeyRecord,
    Database,
    DatasetRecord,
    FeedbackRecord,
    GenerationRecord,
    IdempotencyRecord,
    ModelVersion,
    RunRecord,
)
from genloop.store.jobs import (
    JOB_STATUSES,
    CheckpointRecord,
    EventRecord,
    FileRecord,
    JobRecord,
)
from genloop.store.kg import KGGraphRecord, StoredGraph
from genloop.store.registry import (
    MODEL_NAME_RULE,
    Store,
    parse_model_ref,
    split_variant,
    validate_model_name,
)

__all__ = [
    "FEEDBACK_KINDS",
    "JOB_STATUSES",
    "KEY_NAME_RULE",
    "MODEL_NAME_RULE",
    "RUN_STATUSES",
    "AccessRecords",
    "ApiKeyRecord",
    "CheckpointRecord",
    "Database",
    "DatasetRecord",
    "EventRecord",
    "FeedbackRecord",
    "FileRecord",
    "GenerationRecord",
    "IdempotencyRecord",
    "JobRecord",
    "KGGraphRecord",
    "ModelVersion",
    "RunRecord",
    "Store",
    "StoredGraph",
    "parse_model_ref",
    "split_variant",
    "validate_key_name",
    "validate_model_name",
]
