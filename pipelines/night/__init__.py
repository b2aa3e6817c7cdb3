"""The nightly job: stage -> quality gates -> publish, backfills, identities, and the input checks."""
