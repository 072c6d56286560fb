"""Earning rules and campaigns: the engine (pure), the loader (database, cache) and the
services that credit activity points. See engine.py for the order rules apply in."""
