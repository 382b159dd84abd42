"""TokenleanCache passes LangChain's standard cache test suites (sync and async)."""

from __future__ import annotations

import pytest
from langchain_core.caches import BaseCache
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite
from langchain_tokenlean import TokenleanCache

from tokenlean import CachePolicy, CompletionCache, SQLiteStore, last_user_turn


class TestTokenleanCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return TokenleanCache()


class TestTokenleanSemanticSQLiteCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: object) -> BaseCache:
        from tokenlean.testing import HashingEmbedder

        store = SQLiteStore(f"{tmp_path}/cache.db")
        policy = CachePolicy.semantic(threshold=0.7, compare=last_user_turn)
        return TokenleanCache(CompletionCache(store, policy=policy, embedder=HashingEmbedder()))


class TestTokenleanCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return TokenleanCache()
