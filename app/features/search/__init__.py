"""Search services: one per search kind, each owning its request lifecycle
(validate -> embed -> record -> match once -> dispatch). Routes stay thin."""
