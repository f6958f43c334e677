"""Post-fit deployment: inference backends, parity, benchmark, the deploy bundle and the callback."""
