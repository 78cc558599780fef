"""The one plan builder (`builder`): live, cold and the standby set-up as modes of one skeleton, pure functions of
what their callers observed or read; the standby tiers it reads (`tiers`). The drill's plans are transforms of its
live and cold plans (liferaft.drill.plan)."""
