"""What the tests share: servers, tabs, a Redis of their own, a TCP proxy, figures; the
tables of upgrade requests and bad tokens, a WebSocket frame parser, and until()."""
