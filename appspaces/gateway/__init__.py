"""The appspace gateway: every request to an appspace host passes through here."""
