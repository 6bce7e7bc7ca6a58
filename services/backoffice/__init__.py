"""The régisseur's back office (the desk): server-rendered French pages for cashiers."""
