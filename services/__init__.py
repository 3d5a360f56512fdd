"""What the product does with its data, apart from the queue and the interfaces: imports, program
operations (points, tiers, refunds), history and the report. Used by the workers,
the CLI and the web process; built on `models/` (the data), `campaigns/` (the rules) and `core/`."""
