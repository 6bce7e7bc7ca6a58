"""The régie's documents: invoices, payment certificates, counter receipts, daily journals.

Rendered from Jinja HTML templates to PDF by WeasyPrint (tables, headers, "page x / y"),
each with a verification code (``codes``) that the portal's /verifier checks. Pure of
Flask, Kafka and SQL: the payment service gives the data, this package lays it out.
"""
