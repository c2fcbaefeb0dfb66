"""OAuth 2.0 access tokens (JWT) as passwords, as RabbitMQ's rabbitmq_auth_backend_oauth2
reads them: the client presents a signed token as its password (the user name it sends is
not used), and the token's scopes are its permissions, for that connection only.

Verification (PyJWT, keys from the config's `[oauth2] signing_keys`): the header's `kid`
names the key (`default_key` when it names none); the header's `alg` must be one of
`algorithms` and fit the key (an HMAC secret only with HS*, a PEM public key or certificate
only with an asymmetric algorithm, so a public key can never be used as an HMAC secret);
the signature must verify; `exp` must be present and in the future, `nbf` (if present) in
the past; `aud` must contain `resource_server_id`. Anything else refuses the login.

Scopes (RabbitMQ's `rabbit_oauth2_scope`): the `scope` claim (a space-separated string or a
list) plus the claims named by `additional_scopes_key` (space-separated, each a dotted path;
a value may be a string, a list, or an object keyed by resource_server_id). Only scopes
that start with the prefix (`scope_prefix`, default `<resource_server_id>.`) count; with
the prefix dropped, they read:

- `read:<vhost>/<name>[/<routing-key>]`, `write:...`, `configure:...`: the permission on
  resources whose vhost and name match the wildcard patterns; with a routing-key pattern,
  also the topic permission (RabbitMQ checks topic access only against such scopes, so a
  token with none cannot publish to or bind on a topic exchange);
- `tag:<tag>`: a user tag (`administrator`, `monitoring`, `management`, ...).

A wildcard pattern matches the whole string, `*` any run of characters (`foo*`, `*foo`,
`a*b*c`); a pattern's parts between `*` are URL-decoded, so the vhost `/` is written `%2F`
and a literal `*` `%2A`. `{vhost}` in a scope stands for the vhost being checked and
`{claim}` for that claim of the token (a string). A token user has access to a vhost when
some permission scope's vhost pattern matches it.

The user name is the first string found among `preferred_username_claims`, then `sub`, then
`client_id` ("unknown" if none). Checks made after the token's `exp` are refused, as
RabbitMQ's are.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["ASYMMETRIC_ALGORITHMS", "HMAC_ALGORITHMS", "ScopePermission", "TokenGrant",
           "TokenRefused", "TokenVerifier", "load_signing_key", "looks_like_token",
           "wildcard_match"]

Permission = Literal["configure", "write", "read"]
HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                "ES256", "ES384", "ES512", "EdDSA")
MAX_SCOPES: Final = 2048  # RabbitMQ's limit
MAX_TOKEN_SIZE: Final = 64 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_VARIABLE = re.compile(r"\{([^{}]*)\}")


class TokenRefused(Exception):
    """A token that does not verify; the message is for the log (never the token)."""


def looks_like_token(password: str) -> bool:
    """True for a compact JWS (three base64url segments, the first a JSON header with
    `alg`), which is then checked as a token and not as a password."""
    if len(password) > MAX_TOKEN_SIZE or password.count(".") != 2:
        return False
    head, body, sig = password.split(".")
    if not (_SEGMENT.fullmatch(head) and _SEGMENT.fullmatch(body) and _SEGMENT.fullmatch(sig)):
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def wildcard_match(subject: str, pattern: str) -> bool:
    """RabbitMQ's wildcard patterns (`wildcard.erl`): `*` matches any run of characters,
    the rest literally (URL-decoded), over the whole subject. Linear: each literal part is
    found once, left to right, the last one anchored at the end."""
    parts = [unquote(p, errors="strict") for p in pattern.split("*")]
    if len(parts) == 1:
        return subject == parts[0]
    first, last, middle = parts[0], parts[-1], parts[1:-1]
    if not subject.startswith(first) or len(subject) < len(first) + len(last):
        return False
    if last and not subject.endswith(last):
        return False
    pos, end = len(first), len(subject) - len(last)
    for part in middle:
        if not part:
            continue
        found = subject.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


@dataclass(frozen=True)
class ScopePermission:
    """One `<permission>:<vhost>/<name>[/<routing-key>]` scope."""

    permission: str
    vhost: str
    name: str
    routing_key: str | None

    @classmethod
    def parse(cls, scope: str) -> ScopePermission | None:
        permission, sep, rest = scope.partition(":")
        if not sep or permission not in ("configure", "write", "read"):
            return None
        fields = rest.split("/")
        if len(fields) == 2:
            return cls(permission, fields[0], fields[1], None)
        if len(fields) == 3:
            return cls(permission, fields[0], fields[1], fields[2])
        return None


@dataclass(frozen=True)
class TokenGrant:
    """What a verified token lets its bearer do, until `expires_at` (epoch seconds)."""

    scopes: tuple[ScopePermission, ...]
    tags: tuple[str, ...]
    expires_at: float
    claims: Mapping[str, Any]

    def _expand(self, pattern: str, vhost: str) -> str:
        if "{" not in pattern:
            return pattern

        def value(m: re.Match[str]) -> str:
            if m[1] == "vhost":
                return vhost
            claim = self.claims.get(m[1])
            return claim if isinstance(claim, str) else m[1]

        return _VARIABLE.sub(value, pattern)

    def _match(self, subject: str, pattern: str, vhost: str) -> bool:
        try:
            return wildcard_match(subject, self._expand(pattern, vhost))
        except UnicodeDecodeError:  # a malformed %-escape: the pattern matches nothing
            return False

    def vhost_access(self, vhost: str, now: float) -> bool:
        return now < self.expires_at and any(
            self._match(vhost, s.vhost, vhost) for s in self.scopes)

    def resource_access(self, vhost: str, name: str, permission: str, now: float) -> bool:
        return now < self.expires_at and any(
            s.permission == permission and self._match(vhost, s.vhost, vhost)
            and self._match(name, s.name, vhost) for s in self.scopes)

    def topic_access(self, vhost: str, exchange: str, permission: str, routing_key: str,
                     now: float) -> bool:
        return now < self.expires_at and any(
            s.routing_key is not None and s.permission == permission
            and self._match(vhost, s.vhost, vhost) and self._match(exchange, s.name, vhost)
            and self._match(routing_key, s.routing_key, vhost) for s in self.scopes)


def load_signing_key(path: Path) -> Any:
    """A signing key from a file: a PEM public key or certificate (its public key), else
    the file's bytes (stripped) as an HMAC secret. Raises ValueError naming the problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in raw:
        secret = raw.strip()
        if not secret:
            raise ValueError(f"{path} is empty")
        return secret
    try:
        if b"-----BEGIN CERTIFICATE-----" in raw:
            return x509.load_pem_x509_certificate(raw).public_key()
        return serialization.load_pem_public_key(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM public key or certificate ({exc}); a private "
                         "key does not belong here") from None


class TokenVerifier:
    """Checks tokens against the configured keys and turns them into grants."""

    def __init__(self, resource_server_id: str = "", *,
                 signing_keys: Mapping[str, Any] | None = None, default_key: str = "",
                 algorithms: Iterable[str] = (), preferred_username_claims: Iterable[str] = (),
                 additional_scopes_key: str = "", scope_prefix: str = "") -> None:
        self.resource_server_id = resource_server_id
        self.keys = dict(signing_keys or {})
        self.default_key = default_key
        self.algorithms = tuple(algorithms) or (*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS)
        self.username_claims = (*preferred_username_claims, "sub", "client_id")
        self.additional_scopes_key = additional_scopes_key
        self.prefix = scope_prefix or (f"{resource_server_id}." if resource_server_id else "")

    @property
    def enabled(self) -> bool:
        return bool(self.resource_server_id)

    def verify(self, token: str) -> tuple[str, TokenGrant]:
        """The user name and grant of a valid token; raises `TokenRefused`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"malformed token ({exc})") from None
        kid = header.get("kid") or self.default_key
        if not isinstance(kid, str) or kid not in self.keys:
            raise TokenRefused(f"no signing key {kid!r} is configured")
        key = self.keys[kid]
        alg = header.get("alg")
        fits = HMAC_ALGORITHMS if isinstance(key, bytes) else ASYMMETRIC_ALGORITHMS
        if alg not in self.algorithms or alg not in fits:
            raise TokenRefused(f"algorithm {alg!r} is not accepted for key {kid!r}")
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=self.resource_server_id,
                                options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("the token is not yet valid (nbf)") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(f"the token's audience is not {self.resource_server_id!r}"
                               ) from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"invalid token ({exc})") from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TokenRefused("the token's exp is not a number")
        scopes = self._scopes(claims)
        if len(scopes) > MAX_SCOPES:
            raise TokenRefused(f"the token has more than {MAX_SCOPES} scopes")
        grants: list[ScopePermission] = []
        tags: list[str] = []
        for scope in sorted(set(scopes)):
            if scope.startswith("tag:"):
                tags.append(scope[4:])
                continue
            parsed = ScopePermission.parse(scope)
            if parsed is not None:
                grants.append(parsed)
        return self._username(claims), TokenGrant(tuple(grants), tuple(tags), float(exp),
                                                  claims)

    def _username(self, claims: Mapping[str, Any]) -> str:
        for claim in self.username_claims:
            value = claims.get(claim)
            if isinstance(value, str) and value:
                return value
        return "unknown"

    def _scopes(self, claims: Mapping[str, Any]) -> list[str]:
        """The token's scopes that carry the prefix, with the prefix dropped."""
        found = _scope_list(claims.get("scope"))
        for path in self.additional_scopes_key.split():
            found += self._at_path(claims, path.split("."))
        prefix = self.prefix
        return [s[len(prefix):] for s in found if s.startswith(prefix) and len(s) > len(prefix)]

    def _at_path(self, value: Any, path: list[str]) -> list[str]:
        if not path:
            if isinstance(value, Mapping):  # {"<resource_server_id>": "read:... write:..."}
                inner = value.get(self.resource_server_id)
                return [f"{self.resource_server_id}.{s}" for s in _scope_list(inner)]
            return _scope_list(value)
        if isinstance(value, list):
            return [s for item in value for s in self._at_path(item, path)]
        if isinstance(value, Mapping) and path[0] in value:
            return self._at_path(value[path[0]], path[1:])
        return []


def _scope_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str)]
    return []
