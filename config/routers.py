"""The database router: analysis reads on the read replica, everything else on the primary.

Without ``DATABASE_REPLICA_URL`` every read and write goes to ``default``. With it, reads inside
``core.replica.analysis_reads()`` (the experiment aggregation, exports) go to ``replica`` once
it has replayed what the primary had committed; every other read, and every write, goes to the
primary (docs/operations.md "Read replica").
"""

from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model

from core.replica import REPLICA, read_alias


class ReplicaRouter:
    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        # Explicitly the primary outside analysis reads, even for an object read from the
        # replica: only the blocks that check the replica's position read it.
        return read_alias()

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS  # the replica is read-only, whatever an instance was read from

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # Both aliases hold the same rows.
        if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, REPLICA}:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db != REPLICA  # the replica follows the primary's schema through replication
