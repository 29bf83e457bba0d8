"""The data side of facereel: decode, detect, embed, index, search.

Nothing here imports ``app``; the online side builds on these pieces.
"""
