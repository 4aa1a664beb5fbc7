"""Which client is in charge: the default-client stack, ``Client.current``, ``as_current``,
``get_client`` outside tasks; compared with dask.distributed where cheap."""

from __future__ import annotations

import threading

import pytest

from storied import Client, default_client, get_client
from tests.engine.helpers import inc


def default_stack(client_class, default_client, cluster):
    """What is the default as clients come and go: the same steps for storied and Dask."""
    seen = []
    first = client_class(cluster)
    second = client_class(cluster)
    hidden = client_class(cluster, set_as_default=False)
    seen.append(default_client() is second)
    second.close()
    seen.append(default_client() is first)
    with client_class(cluster) as third:
        fourth = client_class(cluster)
        seen.append(default_client() is third)  # the one of the `with` block is current
        fourth.close()
    seen.append(default_client() is first)
    hidden.close()
    first.close()
    return seen


def test_the_newest_default_client_wins_and_closing_it_restores_the_previous(cluster):
    assert default_stack(Client, default_client, cluster) == [True, True, True, True]
    with Client(cluster) as first:
        assert Client.current() is first
        assert get_client() is first
        with Client(cluster, set_as_default=False) as hidden:
            assert default_client() is first
            assert default_client(hidden) is hidden  # an explicit client is returned as is


def test_dask_keeps_the_same_stack(dask_cluster):
    import distributed

    seen = default_stack(distributed.Client, distributed.default_client, dask_cluster)
    assert seen == [True, True, True, True]


def test_without_clients_there_is_no_default(cluster):
    with Client(cluster) as client:
        pass
    assert client.status == "closed"
    with pytest.raises(ValueError, match="No clients found"):
        default_client()
    with pytest.raises(ValueError, match="No global client found"):
        get_client()
    with pytest.raises(ValueError):
        Client.current()


def test_as_current_wins_over_the_default_in_its_thread_only(cluster):
    with Client(cluster) as default, Client(cluster, set_as_default=False) as other:
        seen_elsewhere = []
        with other.as_current():
            assert Client.current() is other
            assert Client.current(allow_global=False) is other
            assert default_client() is other
            thread = threading.Thread(target=lambda: seen_elsewhere.append(Client.current()))
            thread.start()
            thread.join()
        assert seen_elsewhere == [default]
        assert Client.current(allow_global=False) is default  # current in its `with` block
    plain = Client(cluster)
    try:
        assert Client.current() is plain
        with pytest.raises(ValueError, match="No current client"):
            Client.current(allow_global=False)
    finally:
        plain.close()


def test_get_client_with_the_address_of_the_default_clients_scheduler(cluster, client):
    assert get_client(cluster.scheduler_address) is client
    with pytest.raises(TypeError, match="scheduler address"):
        get_client(42)


def test_the_default_client_runs_work(cluster, client):
    assert default_client().submit(inc, 1).result(timeout=30) == 2
