"""API key format: `tly_<8-char prefix>_<43-char secret>`. The secret carries 256 bits
of randomness, so a plain SHA-256 is enough to store it (no slow hash needed: nobody
can guess it), and lookups stay one indexed query on the prefix."""

import hashlib
import secrets
import string

PREFIX_LEN = 8
_ALPHABET = string.ascii_lowercase + string.digits


def key_generate() -> tuple[str, str, str]:
    """A new key: (full key to show once, prefix to store, hash to store)."""
    prefix = "tly_" + "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LEN))
    secret = secrets.token_urlsafe(32)
    return f"{prefix}_{secret}", prefix, key_hash(secret)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_split(full_key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    # The secret is URL-safe base64 and may itself contain "_": split by position.
    full_key = full_key.strip()
    cut = len("tly_") + PREFIX_LEN
    if (
        not full_key.startswith("tly_")
        or full_key[cut : cut + 1] != "_"
        or len(full_key) <= cut + 1
    ):
        return None
    return full_key[:cut], full_key[cut + 1 :]
