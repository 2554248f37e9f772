"""Stage 2: grids of generations across providers, the run store, the runner."""
