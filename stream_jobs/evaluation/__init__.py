"""Offline evaluation of the detectors: the NAB corpus and its scorer."""
