"""The digital unit in Amaranth 0.5: components with explicit signatures, and the top level.

Every arithmetic constant comes from :mod:`metaplast.contract` and every protocol constant from
:mod:`metaplast.protocol`; nothing here restates them.
"""
