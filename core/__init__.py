"""What every app needs, below all of them: domain errors, outbound-address rules, webhook
signing. No app imports upward into it; it imports no app."""
