"""Operational state: the prober protocol, the probe scheduler, claims and state."""
