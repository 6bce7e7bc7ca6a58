"""The families' portal: server-rendered French pages over the payment API."""
