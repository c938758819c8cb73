"""moto's server for muster-aws's tests, with two changes: TransactWriteItems
rolls back only the items the transaction touched, and every DynamoDB
write is atomic (below).

moto 5.1.22 backs up every table a transaction names with copy.deepcopy
before it writes (moto/dynamodb/models/__init__.py, transact_write_items),
so each transaction costs time in proportion to the whole table: a
10,000-person incident, whose cascades each change in a transaction, took
hours. Here the whole-table copy is skipped and, when the transaction
fails, each touched item is put back as it was (or removed, if it did not
exist). What a transaction does and which errors it raises are moto's own
code, unchanged; only the cost of its backup is.

Usage: moto-server.py -H 127.0.0.1 -p PORT (moto_server's arguments).
"""

import copy
import sys
import threading

import moto

PINNED = "5.1.22"
if moto.__version__ != PINNED:
    sys.exit(f"scripts/moto-server.py patches moto {PINNED}, not {moto.__version__}")

import moto.dynamodb.models as models  # noqa: E402
from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: E402
from moto.dynamodb.models.table import Table  # noqa: E402


class _NoTableCopy:
    """`copy` as moto's DynamoDB backend sees it: a Table is not copied
    (the backup of a transaction), anything else is."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


models.copy = _NoTableCopy()
_transact = models.DynamoDBBackend.transact_write_items


def _touched(backend, transact_items):
    """(table, hash, range, item as it is now) for every item named."""
    out = []
    for entry in transact_items:
        try:
            _, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = op["Item"] if "Item" in op else op["Key"]
            h = DynamoType(key[table.hash_key_attr])
            r = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        except (KeyError, TypeError, AttributeError, StopIteration):
            # Malformed: moto's own validation refuses it.
            continue
        now = table.items.get(h, {}).get(r) if r is not None else table.items.get(h)
        out.append((table, h, r, copy.deepcopy(now)))
    return out


def _restore(touched):
    for table, h, r, before in reversed(touched):
        if r is not None:
            bucket = table.items[h]
            if before is None:
                bucket.pop(r, None)
            else:
                bucket[r] = before
            if not bucket:
                table.items.pop(h, None)
        elif before is None:
            table.items.pop(h, None)
        else:
            table.items[h] = before


def transact_write_items(self, transact_items):
    touched = _touched(self, transact_items)
    try:
        return _transact(self, transact_items)
    except BaseException:
        _restore(touched)
        raise


models.DynamoDBBackend.transact_write_items = transact_write_items

# DynamoDB applies each conditional write atomically; moto's server runs
# requests on threads and checks a condition, then writes, with nothing
# between the two, so two conditional puts on one version can both pass
# (seen as a rate-limiter slot handed out twice under twenty concurrent
# clients). One lock around every write makes each atomic, as DynamoDB's
# are; reads stay concurrent.
_WRITES = threading.RLock()


def _atomic(write):
    def locked(self, *args, **kwargs):
        with _WRITES:
            return write(self, *args, **kwargs)

    return locked


for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    if hasattr(models.DynamoDBBackend, _name):
        setattr(models.DynamoDBBackend, _name, _atomic(getattr(models.DynamoDBBackend, _name)))

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
