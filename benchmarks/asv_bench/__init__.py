"""asv suites for ccfkit (see benchmarks/asv.conf.json)."""
