"""Routing: send each request to the smallest model that can do it, escalating when unsure."""
