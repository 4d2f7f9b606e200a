"""Benchmarks: standalone scripts; speed claims in the project come only from here."""
