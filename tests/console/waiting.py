"""Waiting in Pilot tests for what workers and timers do in the background."""

from __future__ import annotations

from textual.css.query import NoMatches


async def until(pilot, condition, timeout=30.0):
    """Let the app run until ``condition()`` holds (workers finish, timers fire).

    ``timeout`` (seconds of pauses) only bounds a failing test: a passing one returns as soon
    as the condition holds, so a slow or loaded machine makes tests slower, never red."""
    waited = 0.0
    while not _holds(condition):
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)
        waited += 0.05


def _holds(condition) -> bool:
    try:
        return bool(condition())
    except NoMatches:  # the view is still being composed
        return False
