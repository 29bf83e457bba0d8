"""The online side of facereel, in floors whose imports only go down (ARCHITECTURE.md, "Floors")."""
