"""What the tests share: servers, tabs, a Redis of their own, a TCP proxy, figures."""
