"""Prompt assembly: canonical plans ordered static to volatile, volatile-value detection, and
provider prefix-cache hints."""
