"""Command line: `gateway serve` (and, later, `gateway ctl`)."""
