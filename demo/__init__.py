"""The newcomer's path: synthetic sample -> dataset -> tiny model -> evaluation -> report.

It runs each package's own command line, exactly as the Make targets do, so the demo exercises
the same code paths a user runs by hand. Every step reuses what an earlier run already built.
"""
