"""alerting: the monitor component (judges every tick, asks the supervisor, sends alerts), incidents,
alert channels, notices and the daily report. Imports the base, health, supervise and bot (outbox)."""
