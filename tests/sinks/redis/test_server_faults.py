"""Faults injected into private redis-server processes: out of memory, a lost reply, an unsafe
eviction policy, ACL users and wrong passwords, TLS. Each runs its own server."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from core.errors import AmbiguousCommit, ConfigurationError, StoreUnavailable
from core.operations import Batch, PutDocument
from core.position import Position
from core.sink import Target
from sinks.redis import OrderCacheReader, RedisSink, RedisSinkSettings
from sinks.redis.keys import layout_for
from tests.sinks.redis.servers import PrivateRedis
from tests.sinks.redis.support import SINK_ACL, snapshot

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.reliability]

Start = Callable[..., PrivateRedis]
TARGET = Target(lane="order_cache@redis", projection="order_cache", options={"key_prefix": "order"})
P1, P2 = Position(5, 1), Position(6, 2)


def docs(n: int, size: int, version: int = 1) -> tuple[PutDocument, ...]:
    return tuple(PutDocument(f"order-{i}", version, {"pad": "x" * size}) for i in range(n))


def used_memory(server: PrivateRedis) -> int:
    admin = server.admin()
    try:
        return int(admin.info("memory")["used_memory"])
    finally:
        admin.close()


def config_set(server: PrivateRedis, name: str, value: str | int) -> None:
    admin = server.admin()
    try:
        admin.config_set(name, value)
    finally:
        admin.close()


async def test_out_of_memory_refuses_the_whole_batch(
    private_redis: Start, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis()
    async with RedisSink(RedisSinkSettings(url=server.url)) as sink:
        await sink.prepare(TARGET)
        await sink.write(TARGET, Batch("order_cache@redis", docs(200, 1000), None, P1))
        config_set(server, "maxmemory", used_memory(server) - 1024)
        second = Batch("order_cache@redis", docs(300, 1000, version=2), P1, P2)
        with caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailable, match="memory"):
            await sink.write(TARGET, second)
        assert "out of memory" in caplog.text and "nothing was written" in caplog.text
        snap = await snapshot(sink.client, layout_for(TARGET))
        assert snap.checkpoint() == P1
        assert set(snap.versions.values()) == {1} and len(snap.documents) == 200
        async with OrderCacheReader(sink.settings) as reader:  # reads still work
            assert len(await reader.get_orders(f"order-{i}" for i in range(300))) == 200
        config_set(server, "maxmemory", 0)
        await sink.write(TARGET, second)
        snap = await snapshot(sink.client, layout_for(TARGET))
        assert snap.checkpoint() == P2 and set(snap.versions.values()) == {2}


async def test_a_batch_that_crosses_the_limit_is_applied_whole(private_redis: Start) -> None:
    """Redis checks memory when a script starts, never in the middle: a batch that starts
    under the limit runs to its end even though memory goes above the limit on the way
    (``used_memory_peak``); the next one, starting above, is refused whole.

    The limit is raised step by step until the batch is accepted: while a command starts, its
    own arguments count as used memory, so the refused attempts peak below the accepted limit
    and only the accepted script can have taken the peak above it."""
    server = private_redis()
    batch = Batch("order_cache@redis", docs(5_000, 10), None, P1)
    async with RedisSink(RedisSinkSettings(url=server.url)) as sink:
        await sink.prepare(TARGET)
        base = used_memory(server)
        for headroom in range(100_000, 4_000_000, 100_000):
            config_set(server, "maxmemory", base + headroom)
            try:
                await sink.write(TARGET, batch)
            except StoreUnavailable:
                assert await sink.read_checkpoint(TARGET) is None
                continue
            break
        limit = base + headroom
        admin = server.admin()
        try:
            peak = int(admin.info("memory")["used_memory_peak"])
        finally:
            admin.close()
        assert peak > limit, "memory never went above the limit during the accepted script"
        snap = await snapshot(sink.client, layout_for(TARGET))
        assert snap.checkpoint() == P1 and len(snap.documents) == 5_000
        again = Batch("order_cache@redis", docs(5_000, 10, version=2), P1, P2)
        with pytest.raises(StoreUnavailable, match="out of memory"):
            await sink.write(TARGET, again)
        snap = await snapshot(sink.client, layout_for(TARGET))
        assert snap.checkpoint() == P1 and set(snap.versions.values()) == {1}


def monitor_until(server: PrivateRedis, stop: str, into: list[dict[str, Any]]) -> None:
    """Collect MONITOR lines until an ``ECHO <stop>`` passes (run it in a thread)."""
    client = server.admin()
    try:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            for line in monitor.listen():
                if line["command"] == f"ECHO {stop}":
                    return
                into.append(line)
    finally:
        client.close()


async def test_a_batch_is_one_script_call_on_the_server(private_redis: Start) -> None:
    """MONITOR shows what Redis executes: the batch is one EVALSHA from the client, and
    every document and checkpoint write happens inside that script."""
    server = private_redis()
    seen: list[dict[str, Any]] = []
    async with RedisSink(RedisSinkSettings(url=server.url)) as sink:
        await sink.prepare(TARGET)
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, monitor_until, server, "done", seen)
            await anyio.sleep(0.3)
            await sink.write(TARGET, Batch("order_cache@redis", docs(50, 10), None, P1))
            admin = server.admin()
            try:
                admin.echo("done")
            finally:
                admin.close()
    commands = [(line["client_type"], line["command"].split()[0]) for line in seen]
    from_client = [name for kind, name in commands if kind != "lua" and name != "HELLO"]
    inside = [name for kind, name in commands if kind == "lua"]
    assert from_client == ["EVALSHA"]
    assert inside.count("SET") == 50 and inside.count("HSET") == 51


BUSY = """
local t0 = redis.call('TIME')
while true do
  local t = redis.call('TIME')
  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > tonumber(ARGV[1]) then return 1 end
end
"""


async def test_a_lost_reply_of_a_batch_that_landed_is_an_ambiguous_commit(
    private_redis: Start,
) -> None:
    """Redis is busy (a one-second script) when the batch is sent; the client gives up after
    0.3 s and closes; Redis then reads the batch and runs it. The sink reports
    AmbiguousCommit, the checkpoint shows the batch landed, and the resent batch is accepted
    as already applied (no conflict, nothing applied twice)."""
    server = private_redis()
    settings = RedisSinkSettings(url=server.url, socket_timeout=0.3)
    async with RedisSink(settings) as sink, anyio.create_task_group() as group:
        await sink.prepare(TARGET)
        await sink.write(TARGET, Batch("order_cache@redis", docs(10, 100), None, P1))
        admin = server.admin()
        group.start_soon(anyio.to_thread.run_sync, admin.eval, BUSY, 0, 1_000_000)
        await anyio.sleep(0.1)
        batch = Batch("order_cache@redis", docs(10, 100, version=2), P1, P2)
        with pytest.raises(AmbiguousCommit, match="may have been applied"):
            await sink.write(TARGET, batch)
        await anyio.sleep(1.2)
        admin.close()
        assert await sink.read_checkpoint(TARGET) == P2
        await sink.write(TARGET, batch)
        assert await sink.read_checkpoint(TARGET) == P2
        snap = await snapshot(sink.client, layout_for(TARGET))
        assert set(snap.versions.values()) == {2} and len(snap.documents) == 10


async def test_a_lost_reply_of_a_batch_that_did_not_land_is_an_ambiguous_commit(
    private_redis: Start,
) -> None:
    """Redis holds the batch (CLIENT PAUSE WRITE) past the client's timeout; the client closes
    and Redis drops it. The sink reports AmbiguousCommit; the checkpoint shows it did not
    land, and the resent batch is applied."""
    server = private_redis()
    settings = RedisSinkSettings(url=server.url, socket_timeout=0.3)
    async with RedisSink(settings) as sink:
        await sink.prepare(TARGET)
        admin = server.admin()
        try:
            admin.client_pause(800, all=False)  # WRITE: writing commands wait
        finally:
            admin.close()
        batch = Batch("order_cache@redis", docs(10, 100), None, P1)
        with pytest.raises(AmbiguousCommit, match="may have been applied"):
            await sink.write(TARGET, batch)
        await anyio.sleep(1.0)
        assert await sink.read_checkpoint(TARGET) is None
        await sink.write(TARGET, batch)
        assert await sink.read_checkpoint(TARGET) == P1


async def test_a_server_down_at_open_is_checked_on_first_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening the sink while Redis is down stops nothing: the checks (version, policy,
    scripts) run again on the lane's prepare, which fails transiently until Redis is up."""
    server = PrivateRedis(tmp_path / "late")
    settings = RedisSinkSettings(url=server.url, connect_timeout=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger="projectionist.sinks.redis"):
            async with RedisSink(settings) as sink:
                assert "starts unchecked" in caplog.text
                with pytest.raises(StoreUnavailable, match="connecting"):
                    await sink.prepare(TARGET)
                server.start()
                await sink.prepare(TARGET)
                assert (await sink.describe())["server_version"].startswith("7.")
                await sink.write(TARGET, Batch("order_cache@redis", docs(1, 10), None, P1))
    finally:
        server.kill()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_an_evicting_policy_is_warned_about(
    private_redis: Start, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    server = private_redis("--maxmemory-policy", policy)
    with caplog.at_level(logging.WARNING, logger="projectionist.sinks.redis"):
        async with RedisSink(RedisSinkSettings(url=server.url)) as sink:
            assert (await sink.describe())["maxmemory_policy"] == policy
    assert f"maxmemory-policy {policy}" in caplog.text and "noeviction" in caplog.text


async def test_noeviction_is_not_warned_about(
    private_redis: Start, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis()
    with caplog.at_level(logging.WARNING, logger="projectionist.sinks.redis"):
        async with RedisSink(RedisSinkSettings(url=server.url)):
            pass
    assert caplog.text == ""


async def test_acl_user_with_the_documented_permissions(private_redis: Start) -> None:
    server = private_redis()
    admin = server.admin()
    try:
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL",
            "SETUSER",
            "lane",
            "on",
            ">pw-lane-7",
            "~{order}*",
            "resetchannels",
            *SINK_ACL.split(),
        )
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "other", "on", ">pw-other-8", "~{else}*", *SINK_ACL.split()
        )
    finally:
        admin.close()
    good = RedisSinkSettings(url=server.url, username="lane", password="pw-lane-7")
    async with RedisSink(good) as sink:
        await sink.prepare(TARGET)
        await sink.write(TARGET, Batch("order_cache@redis", docs(3, 10), None, P1))
        assert len(await sink.load(TARGET, ["order-0", "order-1"])) == 2
        await sink.reset(TARGET)
    denied = RedisSinkSettings(url=server.url, username="other", password="pw-other-8")
    async with RedisSink(denied) as sink:
        with pytest.raises(ConfigurationError, match="no permissions") as refused:
            await sink.write(TARGET, Batch("order_cache@redis", docs(1, 10), None, P1))
    assert "pw-other-8" not in str(refused.value)


@pytest.mark.parametrize("where", ["field", "url"])
async def test_a_wrong_password_never_appears_in_the_error(
    private_redis: Start, where: str
) -> None:
    server = private_redis("--requirepass", "right-pass-1")
    wrong = "wrong-pass-2"
    if where == "field":
        settings = RedisSinkSettings(url=server.url, password=wrong)
    else:
        settings = RedisSinkSettings(url=server.url.replace("//", f"//:{wrong}@"))
    with pytest.raises(ConfigurationError, match="credentials") as refused:
        async with RedisSink(settings):
            pass
    assert wrong not in str(refused.value) and "right-pass-1" not in str(refused.value)
    right = RedisSinkSettings(url=server.url, password="right-pass-1")
    async with RedisSink(right) as sink:
        assert wrong not in str(await sink.describe())


def make_certificates(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.crt", "r.key", "r.csr", "r.crt")
    )

    def openssl(*args: Any) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        "/CN=localhost",
    )
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
    )
    return {"ca": ca, "cert": cert, "key": key}


async def test_tls(private_redis: Start, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    server = private_redis(tls=certs)
    for url, tls in ((server.url, False), (server.url.replace("rediss", "redis"), True)):
        settings = RedisSinkSettings(url=url, tls=tls, tls_ca_file=str(certs["ca"]))
        async with RedisSink(settings) as sink:
            assert (await sink.describe())["address"].startswith("rediss://")
            await sink.prepare(TARGET)
            await sink.write(TARGET, Batch("order_cache@redis", docs(2, 10), None, P1))
            assert len(await sink.load(TARGET, ["order-0", "order-1"])) == 2
            await sink.reset(TARGET)
    untrusted = RedisSinkSettings(url=server.url)
    with pytest.raises(ConfigurationError, match="certificate"):
        async with RedisSink(untrusted):
            pass


async def test_a_server_turned_replica_is_retried_not_refused(private_redis: Start) -> None:
    """A failover makes the old primary a read-only replica: ``READONLY`` (which redis-py
    raises as its own ReadOnlyError, without the code) is transient, and the write goes
    through once the server takes writes again."""
    server = private_redis()
    async with RedisSink(RedisSinkSettings(url=server.url)) as sink:
        await sink.prepare(TARGET)
        await sink.write(TARGET, Batch("order_cache@redis", docs(3, 10), None, P1))
        admin = server.admin()
        try:
            admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # a primary that never answers
            second = Batch("order_cache@redis", docs(3, 10, version=2), P1, P2)
            with pytest.raises(StoreUnavailable, match="read only replica"):
                await sink.write(TARGET, second)
            admin.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            admin.close()
        await sink.write(TARGET, second)
        snap = await snapshot(sink.client, layout_for(TARGET))
        assert snap.checkpoint() == P2 and set(snap.versions.values()) == {2}


@pytest.mark.parametrize(
    "reply",
    [
        "READONLY You can't write against a read only replica.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "MOVED 3999 127.0.0.1:6381",
        "ASK 3999 127.0.0.1:6381",
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist to disk.",
        "NOREPLICAS Not enough good replicas to write.",
        "BUSY Redis is busy running a script.",
        "LOADING Redis is loading the dataset in memory",
    ],
)
def test_failover_and_persistence_replies_are_transient(reply: str) -> None:
    """Each reply as redis-py raises it (its parser strips the code of the ones it knows)."""
    from redis._parsers.base import BaseParser

    from sinks.redis.errors import translate

    error = translate(BaseParser.parse_error(reply), "writing a batch", "127.0.0.1:6379")
    assert isinstance(error, StoreUnavailable), (reply, error)
