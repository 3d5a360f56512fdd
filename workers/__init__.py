"""Side effects: the queue actors, planning writes, delivery over the channels, the sweeper."""
