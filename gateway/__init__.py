"""The composition root: aiohttp app, HTTP routes, webhooks and CLI."""
