"""Side-by-side benchmarks of compass-bridge against the systems users would pick instead.

Run `python -m bench --help`. Nothing in here is imported by the product or by the tests.
"""
