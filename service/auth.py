"""Optional API keys and job ownership (per-key quotas: ``service.quota``).

Off by default (the embedded single-user mode). With keys configured (``ODESERVE_API_KEYS``,
comma-separated, or ``ODESERVE_API_KEYS_FILE``, one per line) every route except the health
checks needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are kept only as
SHA-256 digests and compared in constant time. A job belongs to the key that created it: any
other key gets 404 for it, exactly as for a job that does not exist.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from rq.job import Job as RQJob

from common.records import ANONYMOUS, JobMeta
from common.settings import Settings
from service.errors import ApiError, not_found


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRing:
    """The configured keys, as digests. Empty: authentication is off."""

    digests: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        keys = [k.strip() for k in (settings.api_keys or "").split(",") if k.strip()]
        if settings.api_keys_file:
            lines = Path(settings.api_keys_file).read_text().splitlines()
            keys += [k.strip() for k in lines if k.strip() and not k.startswith("#")]
        return cls(frozenset(digest(k) for k in keys))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def owner(self, bearer: str | None, x_api_key: str | None) -> str:
        """The owner id (the key's digest) for a request, or 401."""
        if not self.enabled:
            return ANONYMOUS
        presented = x_api_key or bearer
        if presented:
            d = digest(presented)
            if any(hmac.compare_digest(d, known) for known in self.digests):
                return d
        raise ApiError(
            401,
            "Unauthorized",
            "a valid API key is required (Authorization: Bearer or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def check_owner(job: RQJob, owner: str) -> None:
    """404 unless ``owner`` created the job (indistinguishable from a missing job)."""
    if JobMeta.of(job.meta).owner != owner:
        raise not_found(job.id)
