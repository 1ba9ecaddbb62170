"""Compass: the web app's REST API client, the stored credentials, and the source of the Compass tools."""
