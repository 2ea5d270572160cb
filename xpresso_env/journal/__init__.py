"""What a change leaves behind: history, webhook subscriptions, the outbox and its delivery."""
