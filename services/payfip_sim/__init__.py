"""A local stand-in for DGFiP's PayFiP web service (SOAP, payment page, notification).

It speaks the same SOAP as www.payfip.gouv.fr so that the real client (eopayment) can be
tested against it, and it adds a JSON control API under ``/_sim/`` for the tests.
See docs/payfip-simulator.md.
"""
