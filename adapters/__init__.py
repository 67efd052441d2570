"""Channel adapters: one module per channel; each imports core only."""
