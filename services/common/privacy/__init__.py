"""Personal data kept so that it can be erased (crypto-shredding).

Each family's personal fields are stored encrypted with a key of its own
(``keys.KeyStore``); destroying the key erases them everywhere they were stored, while
the stored bytes, and so the hash chain over them, stay as they were. See docs/privacy.md.
"""

from services.common.privacy.keys import KeyStore, MemoryKeyStore, SqlKeyStore
from services.common.privacy.sealing import ERASED, PrivateMapper, open_sealed, seal

__all__ = ["ERASED", "KeyStore", "MemoryKeyStore", "PrivateMapper", "SqlKeyStore",
           "open_sealed", "seal"]
