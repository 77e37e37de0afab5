"""Cohorts: synthetic populations, shards, and population-scale validation and derivation."""
