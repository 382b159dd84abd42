"""The request-log audit behind ``tokenlean audit``: where a log spends tokens it need not."""
