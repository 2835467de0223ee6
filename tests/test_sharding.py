"""Snapshot sharding by user-id hash behind a real nginx: the shard rule matches
nginx's split_clients, and every user is answered by the group whose shard holds them."""
from __future__ import annotations

import contextlib

import pytest
import requests

from bench.serving.synthetic import ALGORITHMS
from bench.sharding.router import nginx_binary, nginx_config, running_nginx, shard_upstream
from bench.sharding.shards import shard_snapshot_root, shard_version, users_by_shard, write_shards
from lookup_server.snapshot_reader import open_snapshot
from schemas.sharding import murmur_hash2, shard_bounds, shard_of, split_bounds, split_clients_parts
from tests.lookup_fixtures import free_port, running_gunicorn, wait_until

SHARDS = 3  # uneven shares (33.33 %, 33.33 %, the rest), so the bounds' rounding matters
USERS = 240
needs_nginx = pytest.mark.skipif(nginx_binary() is None,
                                 reason="nginx is not installed (`make system-packages` installs Debian's nginx)")


def test_bounds_are_those_nginx_documents():
    """nginx's split_clients example: 0.5 % is hashes 0 .. 21474835, then 2 % up to 107374180."""
    assert split_bounds([50, 200]) == (21474836, 107374181)
    assert split_clients_parts(["a", "b", "c"]) == [("33.33%", "a"), ("33.33%", "b"), ("*", "c")]
    assert shard_bounds(1) == () and len(shard_bounds(4)) == 3


def test_murmur_hash2_matches_the_reference_steps():
    """Seed 0 and the length mixed in: the empty input hashes to 0, and the tail bytes count."""
    assert murmur_hash2(b"") == 0
    assert len({murmur_hash2(s) for s in (b"1", b"12", b"123", b"1234", b"12345", b"21")}) == 6
    assert all(0 <= murmur_hash2(str(u).encode()) <= 0xFFFFFFFF for u in range(1000))


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_every_user_in_exactly_one_shard(shards):
    """The shards partition the users, none of them empty."""
    parts = users_by_shard(2000, shards)
    assert sorted(u for part in parts for u in part.tolist()) == list(range(2000))
    assert all(len(part) > 0 for part in parts)
    assert all(shard_of(int(u), shards) == i for i, part in enumerate(parts) for u in part[:20])


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """SHARDS groups (one gunicorn worker each, the shipped config), each reading its
    own shard, behind nginx; yields the router's URL and each group's address."""
    root = tmp_path_factory.mktemp("sharded")
    write_shards(root, SHARDS, users=USERS, products=300, list_length=10)
    with contextlib.ExitStack() as stack:
        addresses = []
        for index in range(SHARDS):
            server = stack.enter_context(running_gunicorn(
                root / f"group-{index}", workers=1,
                extra_env={"RECSYS__SERVER__SNAPSHOT_DIR": str(shard_snapshot_root(root, index))}))
            wait_until(lambda: requests.get(f"{server.base_url}/readyz", timeout=5).status_code == 200,
                       timeout=60, message=f"group {index} ready")
            addresses.append(server.base_url.removeprefix("http://"))
        port = free_port()
        router = f"http://127.0.0.1:{port}"
        stack.enter_context(running_nginx(nginx_config([[a] for a in addresses], f"127.0.0.1:{port}", root),
                                          root, router))
        yield router, addresses, root


@needs_nginx
def test_every_user_is_answered_by_the_shard_that_holds_them(sharded):
    """Through nginx, each user's list comes from their own shard's group: no fallback,
    the answering address and snapshot version are that shard's, and its snapshot
    holds the user."""
    router, addresses, root = sharded
    readers = [open_snapshot(shard_snapshot_root(root, i) / shard_version(i, SHARDS)) for i in range(SHARDS)]
    answered_by = [0] * SHARDS
    with requests.Session() as session:
        for user in range(USERS):
            response = session.get(f"{router}/v1/users/{user}/recommendations?k=5", timeout=5)
            assert response.status_code == 200, (user, response.text)
            body, shard = response.json(), shard_of(user, SHARDS)
            assert (body["user_id"], body["fallback"]) == (user, None), body
            assert body["algorithm"] in ALGORITHMS and len(body["items"]) == 5
            assert response.headers["X-Recsys-Shard"] == shard_upstream(shard)
            assert response.headers["X-Recsys-Upstream"] == addresses[shard]
            assert body["snapshot_version"] == shard_version(shard, SHARDS)
            assert readers[shard].user_list("hybrid", user, 1) is not None
            answered_by[shard] += 1
    assert all(n > 0 for n in answered_by), answered_by


@needs_nginx
def test_a_misrouted_user_would_be_unknown(sharded):
    """The control: asked directly, a group whose shard lacks the user answers with the
    unknown-user fallback, which the routing test would catch."""
    _, addresses, _ = sharded
    for user in (0, 1, 2, 3):
        wrong = (shard_of(user, SHARDS) + 1) % SHARDS
        body = requests.get(f"http://{addresses[wrong]}/v1/users/{user}/recommendations?k=5", timeout=5).json()
        assert body["fallback"] == "unknown_user"


@needs_nginx
def test_paths_without_a_user_reach_some_group(sharded):
    """Similar products, users no shard knows and malformed ids are answered by any group;
    a user id with leading zeros goes where the canonical id goes."""
    router, addresses, _ = sharded
    similar = requests.get(f"{router}/v1/products/7/similar?k=5", timeout=5)
    assert similar.status_code == 200 and len(similar.json()["items"]) == 5
    assert similar.headers["X-Recsys-Shard"] == "any_shard" and similar.headers["X-Recsys-Upstream"] in addresses
    unknown = requests.get(f"{router}/v1/users/{USERS + 17}/recommendations?k=5", timeout=5)
    assert unknown.status_code == 200 and unknown.json()["fallback"] == "unknown_user"
    assert unknown.headers["X-Recsys-Shard"] == shard_upstream(shard_of(USERS + 17, SHARDS))
    bad = requests.get(f"{router}/v1/users/abc/recommendations", timeout=5)
    assert bad.status_code == 400 and bad.headers["X-Recsys-Shard"] == "any_shard"
    padded = requests.get(f"{router}/v1/users/00042/recommendations?k=5", timeout=5)
    assert padded.status_code == 200 and padded.json()["fallback"] is None
    assert padded.headers["X-Recsys-Upstream"] == addresses[shard_of(42, SHARDS)]
