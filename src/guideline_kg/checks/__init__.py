"""Checks: SHACL shapes, check queries, consistency analysis, competency questions and the case gate."""
