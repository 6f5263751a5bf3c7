"""Sample data for `sluice demo` and the benchmarks: realistic inputs with known defects."""
