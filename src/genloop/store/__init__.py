"""The workspace's memory: rows in one database (SQLite or PostgreSQL) and files written atomically.

Stores bytes, paths and JSON only; it never imports torch or the model families.
"""

from genloop.store.db import (
    RUN_STATUSES,
    Database,
    DatasetRecord,
    GenerationRecord,
    ModelVersion,
    RunRecord,
)
from genloop.store.registry import (
    MODEL_NAME_RULE,
    Store,
    parse_model_ref,
    validate_model_name,
)

__all__ = [
    "MODEL_NAME_RULE",
    "RUN_STATUSES",
    "Database",
    "DatasetRecord",
    "GenerationRecord",
    "ModelVersion",
    "RunRecord",
    "Store",
    "parse_model_ref",
    "validate_model_name",
]
