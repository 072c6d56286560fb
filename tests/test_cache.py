"""The shared Redis cache (config/cache.py): a till's request reads its values and counts
itself for the rate limit in one round trip."""

import pytest
from django.core.cache import cache


@pytest.mark.django_db  # the shared_cache fixture tells the rules their cache changed
def test_one_round_trip_reads_values_and_counts_for_a_minute(shared_cache):
    client = cache._cache.get_client(write=True)
    cache.set("memo-a", {"x": 1})
    cache.delete_many(["memo-missing", "memo-hits"])
    found = cache.get_many_shared(
        ["memo-a", "memo-missing"], shared=set(), counts=[("memo-hits", 60)]
    )
    assert found == {"memo-a": {"x": 1}, "memo-hits": 1}
    assert 0 < client.ttl(cache.make_and_validate_key("memo-hits")) <= 60
    client.script_flush()  # Redis restarted and forgot the script: it is loaded again
    again = cache.get_many_shared(["memo-a"], shared={"memo-a"}, counts=[("memo-hits", 60)])
    assert again == {"memo-a": {"x": 1}, "memo-hits": 2}
    assert cache.get_many_shared(["memo-a"], shared={"memo-a"})["memo-a"] is again["memo-a"]


@pytest.mark.django_db
def test_a_counter_alone_counts_for_its_window(shared_cache):
    """The rate limit counted on its own (a request that read its key apart): the same
    script, with no values to read."""
    cache.delete("memo-alone")
    assert [cache.count("memo-alone", 60), cache.count("memo-alone", 60)] == [1, 2]
    ttl = cache._cache.get_client(write=True).ttl(cache.make_and_validate_key("memo-alone"))
    assert 0 < ttl <= 60
