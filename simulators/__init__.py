"""Simulators: a Seoul sensor fleet with replayable incident scenarios and ground-truth labels.

Generation (:mod:`simulators.generator`) is pure and deterministic; publishing
(:mod:`simulators.publisher`) paces and sends it over MQTT.
"""
