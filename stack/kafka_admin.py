"""Kafka admin requests aiokafka's admin client lacks: SCRAM credentials and ACL creation.

Both are sent as the stack's super user over the normal client listener; brokers forward
them to the active controller. The SCRAM password never leaves this process in clear: the
request carries the salt and the salted password (RFC 5802 ``Hi()``, i.e. PBKDF2-HMAC), which
is what ``kafka-configs --alter --add-config 'SCRAM-SHA-512=[...]'`` sends too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from citystream.errors import StackError
from citystream.kafka_client import Principal, client_kwargs
from citystream.settings import Settings
from stack.kafka_acls import AclBinding

logger = logging.getLogger(__name__)

SCRAM_MECHANISMS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
SCRAM_ITERATIONS = 8192
SCRAM_SALT_BYTES = 32
ANY = 1
"""The ``ANY`` code of Kafka's resource, pattern, operation and permission filters."""


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 ``Hi(password, salt, i)``: PBKDF2 with the mechanism's hash and its digest size."""
    digest = "sha512" if mechanism == "SCRAM-SHA-512" else "sha256"
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)


# -- AlterUserScramCredentials (API key 51, v0, flexible) -------------------------------------


class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]  # noqa: N801  # untyped base; Kafka's names
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]  # noqa: N801  # as above
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentials(Request[AlterUserScramCredentialsRequest_v0]):  # type: ignore[misc]  # untyped
    API_KEY = 51

    def __init__(self, upsertions: Sequence[tuple[str, int, int, bytes, bytes]]) -> None:
        self._upsertions = upsertions

    def build(
        self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
    ) -> AlterUserScramCredentialsRequest_v0:
        no_tags: dict[int, bytes] = {}
        upserts = [(*upsertion, no_tags) for upsertion in self._upsertions]
        return request_struct_class([], upserts, no_tags)


class CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]  # untyped base
    """Several ACL creations in one request (aiokafka's ``CreateAclsRequest`` sends one)."""

    API_KEY = 30

    def __init__(self, bindings: Sequence[AclBinding]) -> None:
        self._creations = [
            (
                int(b.resource_type),
                b.resource_name,
                int(b.pattern_type),
                b.principal,
                b.host,
                int(b.operation),
                b.permission,
            )
            for b in bindings
        ]

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


# -- the admin connection ---------------------------------------------------------------------


class KafkaAdmin:
    """A connection as the stack's super user for the requests above."""

    def __init__(self, settings: Settings, principal: Principal = Principal.ADMIN) -> None:
        self.settings = settings
        kwargs = client_kwargs(settings, principal)
        self._client = AIOKafkaClient(request_timeout_ms=30_000, **kwargs)

    async def __aenter__(self) -> KafkaAdmin:
        await self._client.bootstrap()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def _send(self, request: Request[Any]) -> Any:
        node = self._client.get_random_node()
        if node is None:
            msg = "no Kafka broker available for an admin request"
            raise StackError(msg)
        return await self._client.send(node, request)

    async def upsert_scram(self, credentials: Iterable[tuple[str, str]]) -> None:
        """Create or replace SCRAM credentials (user, password) with the configured mechanism."""
        mechanism = self.settings.kafka.sasl_mechanism
        upserts: list[tuple[str, int, int, bytes, bytes]] = []
        for name, password in credentials:
            salt = secrets.token_bytes(SCRAM_SALT_BYTES)
            salted = salted_password(mechanism, password, salt, SCRAM_ITERATIONS)
            upserts.append((name, SCRAM_MECHANISMS[mechanism], SCRAM_ITERATIONS, salt, salted))
        if not upserts:
            return
        response = await self._send(AlterUserScramCredentials(upserts))
        failed = [
            f"{user}: {for_code(code).__name__} {message or ''}".strip()
            for user, code, message, _ in response.results
            if code != 0
        ]
        if failed:
            msg = "Kafka refused SCRAM credentials for " + "; ".join(failed)
            raise StackError(msg)
        logger.info("kafka: SCRAM credentials set for %s", ", ".join(u[0] for u in upserts))

    def brokers(self) -> list[tuple[int, str]]:
        """(node id, ``host:port``) of every broker in the metadata."""
        return [(b.nodeId, f"{b.host}:{b.port}") for b in self._client.cluster.brokers()]

    async def acl_count(self, node_id: int) -> int:
        """How many ACLs one broker's authorizer holds now."""
        request = DescribeAclsRequest(ANY, None, ANY, None, None, ANY, ANY)
        response = await self._client.send(node_id, request)
        if response.error_code:
            raise for_code(response.error_code)(response.error_message or "")
        return sum(len(acls) for *_, acls in response.resources)

    async def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        """Create ACLs (creating an existing one is a no-op for the broker)."""
        if not bindings:
            return
        response = await self._send(CreateAcls(bindings))
        failed = [
            f"{b.principal} {b.operation.name} {b.resource_name}: {for_code(code).__name__} {message or ''}"
            for b, (code, message) in zip(bindings, response.creation_responses, strict=True)
            if code != 0
        ]
        if failed:
            msg = "Kafka refused ACLs: " + "; ".join(failed)
            raise StackError(msg)
        logger.info("kafka: %d ACLs in place", len(bindings))


async def _authenticates(kwargs: dict[str, Any], address: str) -> bool:
    client = AIOKafkaClient(**{**kwargs, "bootstrap_servers": address}, request_timeout_ms=5000)
    try:
        await client.bootstrap()
    except KafkaError:
        return False
    finally:
        await client.close()
    return True


async def wait_effective(
    settings: Settings,
    bindings: Sequence[AclBinding],
    principals: Iterable[Principal],
    timeout_s: float = 30.0,
) -> None:
    """Wait until every broker has applied the ACLs and accepts every principal's credential.

    Brokers apply controller changes from the metadata log a moment after the controller
    answered; a process started right after ``stack up`` would otherwise be refused.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with KafkaAdmin(settings) as admin:
        brokers = admin.brokers()
        pending = {node for node, _ in brokers}
        while pending:
            pending = {node for node in pending if await admin.acl_count(node) < len(bindings)}
            if pending and loop.time() > deadline:
                msg = f"Kafka brokers {sorted(pending)} have not applied the ACLs after {timeout_s:.0f} s"
                raise StackError(msg)
            if pending:
                await asyncio.sleep(0.2)
    todo = [(p, address) for p in principals for _, address in brokers]
    while todo:
        todo = [(p, a) for p, a in todo if not await _authenticates(client_kwargs(settings, p), a)]
        if todo and loop.time() > deadline:
            names = sorted({p.value for p, _ in todo})
            msg = f"Kafka does not accept the credentials of {', '.join(names)} after {timeout_s:.0f} s"
            raise StackError(msg)
        if todo:
            await asyncio.sleep(0.2)


async def apply_security(settings: Settings, bindings: Sequence[AclBinding]) -> None:
    """Give every process principal its SCRAM credential and its ACLs (idempotent), and wait
    until the brokers enforce them."""
    from citystream.kafka_client import principal_password

    k = settings.kafka
    creds = []
    for principal in Principal:
        if principal is Principal.ADMIN:
            continue  # created at format time: the brokers need it before they can talk
        password = principal_password(k, principal)
        if not password:
            msg = f"no password for Kafka principal {principal.value}; run 'citystream stack up'"
            raise StackError(msg)
        creds.append((principal.value, password))
    try:
        async with KafkaAdmin(settings) as admin:
            await admin.upsert_scram(creds)
            await admin.create_acls(bindings)
        await wait_effective(settings, bindings, [p for p in Principal if p is not Principal.ADMIN])
    except KafkaError as exc:
        msg = f"setting up Kafka principals failed: {type(exc).__name__}"
        raise StackError(msg) from exc
