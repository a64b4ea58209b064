"""Offline evaluation: full-ranking metrics, reference recommenders, comparisons across runs."""
