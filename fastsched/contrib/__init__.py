"""Integrations with frameworks: ``fastsched.contrib.django``."""
