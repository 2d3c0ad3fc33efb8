"""ops: the operator's commands (`python -m botkeeper ...`: status, stop, doctor, update, install, history,
outbox, probe). May import every other wing; nothing imports ops but botkeeper/__main__.py."""
