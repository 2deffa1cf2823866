"""Tests of the Redis sink against the real Redis (and Postgres for the order log)."""
