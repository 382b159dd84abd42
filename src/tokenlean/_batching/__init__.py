"""Micro-batching and model routing."""
