"""Object versions on one real RocksDB (node/_store.py): how a replica decides to apply
a home's batch, repair its copy, or keep the copy it has.

A version is ``(term << 32) + n``, the term being the writer's membership revision;
a batch moves an object from ``base`` to ``version``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from abode.node._store import TERM_SHIFT, VERSION, Batch, Store

A = bytes([1]) * 32
B = bytes([2]) * 32


class Term:
    """The writer's term, as its membership view would move it."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def writer_term() -> Term:
    return Term()


@pytest.fixture
def store(tmp_path: Path, writer_term: Term) -> Iterator[Store]:
    s = Store(str(tmp_path / "db"), sync=False, term=writer_term)
    yield s
    s.close()


def batch(oid: bytes, base: int, version: int, value: bytes = b"x") -> Batch:
    return Batch(oid, version, "Ns", base=base,
                 puts=[(oid + VERSION, version.to_bytes(8, "big")), (oid + b"dk", value)])


def term(t: int, n: int = 0) -> int:
    return (t << TERM_SHIFT) + n


def test_a_new_term_outranks_every_version_of_an_older_one(
    store: Store, writer_term: Term
) -> None:
    assert store.next_version(0) == 1  # outside a cluster: one more each time
    writer_term.now = 7
    assert store.next_version(5) == term(7)
    assert store.next_version(term(7)) == term(7, 1)
    # However many writes an old home made in its term, the next home's first is newer.
    assert store.next_version(term(6, 2**31)) == term(7)
    writer_term.now = 6  # a writer whose view lags keeps counting up, never back
    assert store.next_version(term(7, 3)) == term(7, 4)


def test_a_replica_applies_a_chain_of_batches_once_each(store: Store) -> None:
    chain = [batch(A, 0, term(3)), batch(A, term(3), term(3, 1)), batch(B, 0, term(3))]
    assert store.apply_replicas(chain) == [True, True, True]
    assert store.object_version(A) == term(3, 1)
    assert store.apply_replicas(chain) == [True, True, True]  # a resend changes nothing
    assert store.object_version(A) == term(3, 1)
    assert store.get(A + b"dk") == b"x"


def test_a_copy_that_missed_a_batch_asks_for_repair_and_stops_applying_that_object(
    store: Store,
) -> None:
    store.apply_replicas([batch(A, 0, term(3))])
    got = store.apply_replicas([
        batch(A, term(3, 1), term(3, 2)),  # term(3, 1) never arrived here
        batch(A, term(3, 2), term(3, 3)),
        batch(B, 0, term(3)),  # another object is not held back
    ])
    assert got == [False, False, True]
    assert store.object_version(A) == term(3)
    # The repair: the home's whole object, then the same batches again.
    store.replace_object(A, [(A + VERSION, term(3, 2).to_bytes(8, "big")), (A + b"dk", b"h")])
    assert store.apply_replicas([batch(A, term(3, 1), term(3, 2)),
                                 batch(A, term(3, 2), term(3, 3), b"y")]) == [True, True]
    assert store.object_version(A) == term(3, 3)
    assert store.get(A + b"dk") == b"y"


def test_a_copy_holding_an_old_homes_unacknowledged_write_is_repaired_not_stacked(
    store: Store,
) -> None:
    # The old home wrote term(3, 1) here (no other copy took it); the new home's first
    # batch builds on term(3): applying it on top would mix two histories.
    store.apply_replicas([batch(A, 0, term(3)), batch(A, term(3), term(3, 1), b"lost")])
    assert store.apply_replicas([batch(A, term(3), term(9), b"new")]) == [False]
    assert store.get(A + b"dk") == b"lost"


def test_catch_up_keeps_the_newer_copy_of_each_object(store: Store) -> None:
    store.apply_replicas([batch(A, 0, term(3, 4), b"mine"), batch(B, 0, term(9), b"mine")])
    incoming = [
        (A + VERSION, term(5).to_bytes(8, "big")), (A + b"dk", b"theirs"),  # newer home
        (B + VERSION, term(4, 9).to_bytes(8, "big")), (B + b"dk", b"theirs"),  # older
    ]
    assert store.ingest(incoming) == [A]
    assert store.get(A + b"dk") == b"theirs"
    assert store.get(B + b"dk") == b"mine"
