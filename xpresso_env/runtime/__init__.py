"""Runtime pieces every room uses: the lease, background loops, atomic files, redaction, events, logs."""
