"""The event stores: persistence, the hash chain, and the history as export and import."""
