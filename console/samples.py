"""Loading the sample apps, with a few facets holding data, into an empty data directory.

So that `make run` opens on a live system: a newcomer sees apps, facets,
tables with rows, logs and meters at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from runtime import BuildProgress, Supervisor

SAMPLE_APPS = Path(__file__).resolve().parent.parent / "sample_apps"
#: (app name, file) in load order; the WAT counter is the ABI's hello world.
SAMPLES = (
    ("hello", SAMPLE_APPS / "counter" / "counter.wat"),
    ("counter", SAMPLE_APPS / "counter" / "counter.wasm"),
    ("todo", SAMPLE_APPS / "todo" / "todo.wasm"),
    ("guestbook", SAMPLE_APPS / "guestbook" / "guestbook.wasm"),
    ("shortener", SAMPLE_APPS / "shortener" / "shortener.wasm"),
    ("poll", SAMPLE_APPS / "poll" / "poll.wasm"),
    ("hits", SAMPLE_APPS / "hits" / "hits.wasm"),
)

#: The samples' JavaScript and Python twins, built from source into components: the first
#: time 10-30 s each (the console builds them in the background), then from the cache.
COMPONENT_SAMPLES = (
    ("todo-js", SAMPLE_APPS / "todo" / "todo.js"),
    ("guestbook-py", SAMPLE_APPS / "guestbook" / "guestbook.py"),
    ("reminders", SAMPLE_APPS / "reminders" / "reminders.js"),
)
COMPONENT_SEED_REQUESTS: tuple[tuple[str, object], ...] = (
    ("todo-js/carol", {"op": "add", "list": "errands", "title": "post the parcel"}),
    ("todo-js/carol", {"op": "add", "list": "errands", "title": "buy stamps"}),
    ("guestbook-py/lobby", {"op": "sign", "name": "guido", "message": "Hello from a Python component."}),
    # An alarm an hour ahead: the home view's alarm column and the Apps view's next alarms.
    ("reminders/alice", {"op": "add", "text": "stand up and stretch", "in": 3600}),
)

SEED_REQUESTS: tuple[tuple[str, object], ...] = (
    ("hello/world", ""),
    ("counter/alice", {"op": "incr", "by": 41}),
    ("counter/alice", {"op": "incr"}),
    ("todo/alice", {"op": "add", "list": "groceries", "title": "oat milk"}),
    ("todo/alice", {"op": "add", "list": "groceries", "title": "coffee beans"}),
    ("todo/alice", {"op": "add", "list": "groceries", "title": "bread"}),
    ("todo/alice", {"op": "done", "id": 2}),
    ("todo/alice", {"op": "add", "list": "work", "title": "ship the console"}),
    ("todo/bob", {"op": "add", "list": "weekend", "title": "fix the bike"}),
    ("guestbook/lobby", {"op": "sign", "name": "ada", "message": "First!"}),
    ("guestbook/lobby", {"op": "sign", "name": "grace", "message": "Hello from the terminal."}),
    ("guestbook/lobby", {"op": "sign", "name": "linus", "message": "Nice and small."}),
    ("shortener/acme", {"op": "shorten", "url": "https://example.com/pricing"}),
    ("shortener/acme", {"op": "shorten", "url": "https://example.com/docs"}),
    ("poll/team", {"op": "create", "question": "Lunch on Friday?", "options": ["pizza", "sushi", "tacos"]}),
    ("poll/team", {"op": "vote", "poll": 1, "voter": "ada", "option": 2}),
    ("poll/team", {"op": "vote", "poll": 1, "voter": "grace", "option": 1}),
    ("poll/team", {"op": "vote", "poll": 1, "voter": "linus", "option": 2}),
    ("hits/site", {"op": "hit", "path": "/"}),
    ("hits/site", {"op": "hit", "path": "/about"}),
    ("hits/site", {"op": "hit", "path": "/"}),
)


def load_samples(sup: Supervisor, *, seed: bool = True) -> bool:
    """Load the sample apps and seed a few facets if the data directory has no apps yet.

    Returns True when it did something.
    """
    if sup.app_list():
        return False
    for name, path in SAMPLES:
        sup.load_app(path, name)
    if seed:
        for target, body in SEED_REQUESTS:
            sup.call(target, body if isinstance(body, str) else json.dumps(body))
        for link in ("shortener/acme",):
            top = json.loads(sup.call(link, json.dumps({"op": "top"})).response)
            for entry in top["links"][:1]:
                for _ in range(3):
                    sup.call(link, json.dumps({"op": "resolve", "id": entry["id"]}))
    return True


def missing_component_samples(sup: Supervisor) -> list[tuple[str, Path]]:
    """The component samples not loaded yet (all of them in a data directory that had none)."""
    have = {info.name for info in sup.app_list()}
    return [(name, path) for name, path in COMPONENT_SAMPLES if name not in have]


def load_component_samples(
    sup: Supervisor, samples: list[tuple[str, Path]], progress: Callable[[BuildProgress], None] | None = None
) -> list[str]:
    """Build and load ``samples`` and seed their facets; returns the names loaded. Slow the
    first time (a build and a compile each): the console runs it on a worker thread."""
    loaded = []
    for name, path in samples:
        sup.load_app(path, name, progress=progress)
        loaded.append(name)
    for target, body in COMPONENT_SEED_REQUESTS:
        if target.split("/")[0] in loaded:
            sup.call(target, json.dumps(body))
    return loaded
