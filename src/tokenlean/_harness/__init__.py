"""The end-to-end benchmark harness: a generated workload, a simulated model, four variants."""
