"""Token-efficiency metrics, cost accounting, privacy and exporters."""
