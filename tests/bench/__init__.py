"""Smoke test of `make bench` (bench/): every scenario once, at a tiny scale."""
