"""Measured peak memory per model family x runtime x precision x device (`benchmarks/measure_memory.py`)."""
