"""Sharing under contract: what leaves the plant through a ``share: contracts`` sink is exactly
what a contract releases (datasets, categories, validity, resolution, pseudonyms), and every
release is recorded. Contracts (:mod:`.contracts`), the release stage (:mod:`.release`),
pseudonyms (:mod:`.pseudonyms`), the ledger and audit (:mod:`.ledger`)."""
