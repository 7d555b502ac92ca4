"""Benchmarks behind `civicmail bench ...`: each prints the figure an issue asks for."""
