"""Who is asking and what they may read: authentication, the read scope, the response cache."""
