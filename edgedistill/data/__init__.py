"""Readings, their checks and windows: reading and validating the table in one streaming pass,
cutting windows per recording, normalisation."""
