"""What a gateway process knows and keeps fresh: settings read once (`limits`), the per-event-
loop runtime (`runtime`), cached appspace config and sessions (`cache`, `config`), their
invalidation in this process and in the others (`invalidation`, `broadcast`), and the open
long-lived connections re-admitted when access changes (`connections`)."""
