"""QuotaBook: a change is never hidden by a stale cached value (issue 12, defect 3)."""

from __future__ import annotations

import threading

import pytest

import runtime.quotas
from runtime.quotas import QuotaBook


def test_a_change_during_a_lookup_is_not_hidden_by_a_stale_cache_entry(monkeypatch):
    """Deterministic interleaving: ``apply`` runs (on another thread) after ``effective``
    computed its result from the old settings and before it writes that result to a cache.
    The next lookup must see the new value; the old code cached the stale one until the next change."""
    book = QuotaBook({"counter": {"fuel": 5_000_000}})
    real_replace = runtime.quotas.replace
    interleaved = threading.Event()

    def replace_then_change(base, **changes):
        computed = real_replace(base, **changes)
        if not interleaved.is_set():
            interleaved.set()
            writer = threading.Thread(target=book.apply, args=("counter", {"fuel": 7_000_000}, []))
            writer.start()
            writer.join()
        return computed

    monkeypatch.setattr(runtime.quotas, "replace", replace_then_change)
    racing = book.effective("counter", "a")
    assert interleaved.is_set()
    assert racing.fuel == 5_000_000  # computed before the change: the old value
    assert book.effective("counter", "a").fuel == 7_000_000
    assert book.effective("counter", "b").fuel == 7_000_000


def test_forget_during_a_lookup_is_not_hidden_either(monkeypatch):
    book = QuotaBook({"counter/a": {"fuel": 5_000_000}})
    real_replace = runtime.quotas.replace
    done = threading.Event()

    def replace_then_forget(base, **changes):
        computed = real_replace(base, **changes)
        if not done.is_set():
            done.set()
            writer = threading.Thread(target=book.forget, args=("counter/a",))
            writer.start()
            writer.join()
        return computed

    monkeypatch.setattr(runtime.quotas, "replace", replace_then_forget)
    assert book.effective("counter", "a").fuel == 5_000_000
    assert book.effective("counter", "a").fuel == runtime.quotas.Quotas().fuel


def test_published_settings_are_never_mutated():
    """A reader holding a state keeps a consistent view: writers copy, never change it in place."""
    book = QuotaBook({"counter": {"fuel": 5_000_000}})
    before = book._state
    book.apply("counter", {"memory": 1 << 20}, [])
    book.apply("counter", {}, ["fuel"])
    assert before.settings == {"counter": {"fuel": 5_000_000}}
    assert book.explicit("counter") == {"memory": 1 << 20}
    book.apply("counter", {}, ["memory"])
    assert book.explicit("counter") == {} and book.effective("counter") == runtime.quotas.Quotas()


@pytest.mark.parametrize("cached_first", [True, False])
def test_cached_values_follow_every_change(cached_first):
    book = QuotaBook()
    if cached_first:
        assert book.effective("a", "b").fuel == runtime.quotas.Quotas().fuel
    book.apply("*", {"fuel": 10}, [])
    book.apply("a", {"fuel": 20}, [])
    assert book.effective("a", "b").fuel == 20 and book.effective("z").fuel == 10
    book.apply("a/b", {"fuel": 30}, [])
    assert book.effective("a", "b").fuel == 30 and book.effective("a", "c").fuel == 20


def test_stored_values_out_of_range_are_ignored_and_reported(tmp_path):
    """A control database written before the ranges existed (``rate=inf``, a key since
    removed) must not fail every request: the bad settings are left out and logged."""
    import sqlite3

    from runtime import Supervisor
    from tests.conftest import COUNTER_WAT

    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT)
        sup.set_quotas("counter", fuel="5M")
    with sqlite3.connect(data / "control.sqlite3") as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO quotas(scope, key, value) VALUES (?, ?, ?)",
            [
                ("*", "rate", float("inf")),
                ("counter", "bogus", 1),
                ("counter/alice", "timeout_ms", 10**12),
                ("counter/alice", "memory", float("inf")),
            ],
        )
    conn.close()
    with Supervisor(data) as sup:
        result = sup.call("counter/alice")
        assert result.ok, result.message
        quotas = sup.quotas("counter/alice")
        assert (quotas.rate, quotas.timeout_ms, quotas.fuel) == (1000.0, 2000, 5_000_000)
        warnings = [r.message for r in sup.logs(level="warn") if "stored quota ignored" in r.message]
        assert len(warnings) == 4
        assert any("rate=inf" in w for w in warnings)
