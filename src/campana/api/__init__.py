"""HTTP and WebSocket routes: parse, call one use case, answer."""
