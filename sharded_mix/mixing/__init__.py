"""The mixture's arithmetic, pure (no I/O): weights, stages, blend, epoch orders, the stream position, transitions,
plans.
"""
