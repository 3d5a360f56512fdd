"""The foundation every layer may import: errors, settings, calendar, redaction, tokens, logging.

It imports nothing of ours, so it is the bottom of the layers (see the README's layout table)."""
