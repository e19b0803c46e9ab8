"""Canary secrets: unique random values stored in the real backends, and a leak detector.

Every run makes new values, so a value found anywhere can only have come from this run.
A leak is any 8-character piece of a canary's random part (a truncated or shortened
echo counts: ~48 random bits, so no false alarm), plainly or base64-encoded at any
alignment (a patch or any other base64 field).
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass

from tests.servers import BaoServer, MotoServer

FRAGMENT = 8
ALPHABET = string.ascii_letters + string.digits


def new_canary(kind: str) -> str:
    """`cnry-<kind>-<32 random letters and digits>`."""
    return f"cnry-{kind}-{''.join(secrets.choice(ALPHABET) for _ in range(32))}"


@dataclass(frozen=True)
class Canaries:
    """One run's canary values and where they are stored."""

    namespace: str  # the tenant that may use them (default policy: paths under it)
    vault_db: str  # vault secret/data/<ns>/db  #password
    vault_api: str  # vault secret/data/<ns>/api  #token
    sm_json: str  # aws-sm <ns>/api-key  #apiKey (a JSON secret)
    sm_plain: str  # aws-sm <ns>/plain  (a plain SecretString)
    ssm: str  # aws-ssm /<ns>/db-url  (a SecureString)
    plaintext: str  # stored nowhere: a literal env value some pods carry

    @property
    def values(self) -> dict[str, str]:
        return {
            "vault_db": self.vault_db,
            "vault_api": self.vault_api,
            "sm_json": self.sm_json,
            "sm_plain": self.sm_plain,
            "ssm": self.ssm,
            "plaintext": self.plaintext,
        }

    @property
    def refs(self) -> dict[str, str]:
        """References to the stored canaries, as pods write them."""
        ns = self.namespace
        return {
            "vault_db": f"vault:secret/data/{ns}/db#password",
            "vault_api": f"vault:secret/data/{ns}/api#token",
            "sm_json": f"aws-sm:{ns}/api-key#apiKey",
            "sm_plain": f"aws-sm:{ns}/plain",
            "ssm": f"aws-ssm:/{ns}/db-url",
        }

    def leaks(self, data: str | bytes) -> list[str]:
        """Which canaries (by name) `data` gives away, plainly or in base64."""
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        return [name for name, value in self.values.items() if _found(value, text)]


def _found(value: str, text: str) -> bool:
    return any(piece in text for piece in _pieces(value))


def _pieces(value: str) -> Iterator[str]:
    random_part = value.rsplit("-", 1)[1]
    for start in range(len(random_part) - FRAGMENT + 1):
        yield random_part[start : start + FRAGMENT]
    for offset in range(3):  # one of three alignments lines up with any base64 stream
        encoded = base64.b64encode(value[offset:].encode()).decode()
        yield encoded[:-4]  # the last group may mix with what follows


def seed(openbao: BaoServer, moto: MotoServer) -> Canaries:
    """Store fresh canaries in OpenBao (KV v2) and moto (Secrets Manager, SSM)."""
    namespace = f"obs-{secrets.token_hex(4)}"
    canaries = Canaries(
        namespace=namespace,
        vault_db=new_canary("vault"),
        vault_api=new_canary("vault"),
        sm_json=new_canary("sm"),
        sm_plain=new_canary("sm"),
        ssm=new_canary("ssm"),
        plaintext=new_canary("plain"),
    )
    kv = openbao.client().secrets.kv.v2
    kv.create_or_update_secret(path=f"{namespace}/db", secret={"password": canaries.vault_db})
    kv.create_or_update_secret(path=f"{namespace}/api", secret={"token": canaries.vault_api})
    sm = moto.client("secretsmanager")
    sm.create_secret(
        Name=f"{namespace}/api-key", SecretString=json.dumps({"apiKey": canaries.sm_json})
    )
    sm.create_secret(Name=f"{namespace}/plain", SecretString=canaries.sm_plain)
    moto.client("ssm").put_parameter(
        Name=f"/{namespace}/db-url", Value=canaries.ssm, Type="SecureString"
    )
    return canaries
