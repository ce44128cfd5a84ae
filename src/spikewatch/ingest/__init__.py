"""Getting frames in: the one reconnecting WebSocket client."""
