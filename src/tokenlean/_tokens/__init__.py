"""Tokens: counters (tiktoken, Hugging Face, approximate), whole-request counts, calibration
against provider-reported usage."""
