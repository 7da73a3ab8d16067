"""trainer: the paper's noise-robust pre-activation ResNet-18 on ccfkit stores.

Not implemented yet (issue "trainer"); the package and its command exist so
that the distribution's layout is final.
"""
