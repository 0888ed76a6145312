"""The dispute: model commitments, graph and VM traces, the parties and the game's moves.

This is the only package that uses vm/, the contracts and a chain together (docs/DESIGN.md,
"The dispute protocol"). Everything a party computes off chain is derived here from a build.
"""
