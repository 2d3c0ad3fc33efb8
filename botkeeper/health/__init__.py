"""health: reading the bundle (run files, the heartbeat, process stats) into one snapshot, and judging it
into one verdict. Pure decisions over plain data; imports only the base (botkeeper's top-level modules)."""
