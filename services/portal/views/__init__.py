"""The portal's pages, one blueprint a job: log-in and account, invoices, payments."""
