"""What each appspace costs: sampled counters, disk quota, the day rows the panel shows."""
