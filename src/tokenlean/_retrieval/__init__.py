"""Budgeted retrieval: hybrid BM25 + dense search, reranking, dedup and packing into a budget."""
