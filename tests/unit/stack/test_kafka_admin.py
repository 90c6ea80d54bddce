from __future__ import annotations

import base64
import hashlib
import hmac
from io import BytesIO

from aiokafka.protocol.admin import CreateAclsRequest_v1

from stack.kafka_acls import AclBinding, Operation, PatternType, ResourceType
from stack.kafka_admin import (
    SCRAM_MECHANISMS,
    AlterUserScramCredentials,
    AlterUserScramCredentialsRequest_v0,
    CreateAcls,
    salted_password,
)


def test_salted_password_matches_the_rfc_7677_example() -> None:
    """RFC 7677 section 3: user "user", password "pencil"; the client proof must match."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = salted_password("SCRAM-SHA-256", "pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
    )
    signature = hmac.new(stored_key, auth_message.encode(), hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    assert base64.b64encode(proof).decode() == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="


def test_sha512_uses_its_own_digest_size() -> None:
    assert len(salted_password("SCRAM-SHA-512", "pw", b"salt", 4096)) == 64
    one = salted_password("SCRAM-SHA-512", "pw", b"salt", 4096)
    assert one != salted_password("SCRAM-SHA-512", "pw", b"salt2", 4096)


def test_scram_upsert_request_round_trips() -> None:
    upsert = ("ingest", SCRAM_MECHANISMS["SCRAM-SHA-512"], 8192, b"s" * 32, b"p" * 64)
    request = AlterUserScramCredentials([upsert]).build(AlterUserScramCredentialsRequest_v0)
    decoded = AlterUserScramCredentialsRequest_v0.SCHEMA.decode(BytesIO(request.encode()))
    deletions, upsertions, tags = decoded
    assert deletions == []
    assert upsertions == [(*upsert, {})]
    assert tags == {}
    assert AlterUserScramCredentialsRequest_v0.FLEXIBLE_VERSION


def test_create_acls_sends_every_binding_in_one_request() -> None:
    bindings = [
        AclBinding("User:ingest", ResourceType.TOPIC, "telemetry.raw", PatternType.LITERAL, Operation.WRITE),
        AclBinding("User:jobs", ResourceType.GROUP, "citystream-jobs", PatternType.PREFIXED, Operation.READ),
    ]
    request = CreateAcls(bindings).build(CreateAclsRequest_v1)
    (creations,) = CreateAclsRequest_v1.SCHEMA.decode(BytesIO(request.encode()))
    assert creations == [
        (2, "telemetry.raw", 3, "User:ingest", "*", 4, 3),
        (3, "citystream-jobs", 4, "User:jobs", "*", 3, 3),
    ]
