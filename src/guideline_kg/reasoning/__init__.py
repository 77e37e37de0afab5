"""Reasoning: HermiT, the OWL 2 DL profile check, and the derivation of statuses with explanations."""
