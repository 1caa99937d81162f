"""The analysis SQL: statement builders (builders.py) and one dialect per engine (dialects.py)."""
