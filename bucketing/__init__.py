"""GrowthBook-compatible evaluation, pure (the standard library, numpy for the vectorised paths,
google-re2 for linear-time regexes): hashing and bucketing, targeting conditions, and the
features payload. Nothing here knows about the database; assignments/ feeds it."""
