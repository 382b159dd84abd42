"""Test helpers for tokenlean users: fakes, and the contracts every store must meet.

- :class:`HashingEmbedder` is a **fake** embedder (hashed bag of words), deterministic and
  instant; it is not a language model and says nothing about real retrieval quality.
- :class:`FakeClock` is a settable clock for TTL tests.
- :class:`FaultyTranscriptStore` is an in-memory transcript store that fails on demand (its
  writes, or every call), for testing an app's behaviour when its memory store fails.
- :class:`CacheStoreContract` is the behaviour suite tokenlean runs against its own stores.
  Subclass it in a ``Test…`` class and implement :meth:`CacheStoreContract.make_store` to check
  your own backend::

      class TestMyStore(CacheStoreContract):
          def make_store(self, **limits):
              return MyStore(**limits)

- :class:`TranscriptStoreContract` is the same for transcript stores (the memory's
  :class:`~tokenlean.TranscriptStore`): implement its ``make_store()``, and for a persistent
  backend set ``persistent = True`` and implement ``reopen(store)``.
"""

from tokenlean.testing._cache_contract import CacheStoreContract
from tokenlean.testing._fakes import FakeClock, HashingEmbedder
from tokenlean.testing._faulty import FaultyTranscriptStore
from tokenlean.testing._transcript_contract import TranscriptStoreContract

__all__ = [
    "CacheStoreContract",
    "FakeClock",
    "FaultyTranscriptStore",
    "HashingEmbedder",
    "TranscriptStoreContract",
]
