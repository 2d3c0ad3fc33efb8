"""supervise: the process owner (supervisor, runner, auto_recovery), spawning and stopping children,
the control channel, the warm-start client, outer-supervisor cooperation. Imports the base and health."""
