"""Test-only shims for lab servers' deviations from the real services. Never imported by liferaft itself."""
