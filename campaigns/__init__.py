"""The campaign rules: definitions (YAML), who is due what and when, and message rendering.

Everything here is pure: it decides and renders, and leaves database writes and the network to
``workers/``.
"""
