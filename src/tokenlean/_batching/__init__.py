"""Micro-batching: a scheduler that groups compatible requests, its executors, and provider
batch files."""
