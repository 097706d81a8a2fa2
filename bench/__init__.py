"""fastsched's benchmarks (pytest-benchmark). A package so that a pool can ``--import bench.jobs``."""
