"""What each appspace costs.

counters    supervisor counters -> daily deltas and day rows; pruning old days
collection  the periodic collection: every running sandbox sampled once
requests    requests answered per appspace and day, counted by each web process
quota       the disk measured, and data made read-only above the quota
summary     the figures of the usage card (today, 7 and 30 days, disk against the quota)
charts      the 30-day charts, as server-drawn SVG (the card and the staff overview)
"""
