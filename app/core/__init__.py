"""Pure building blocks, no I/O of the app's own: domain errors, the contract's payloads and schemas, ids."""
